"""Audio-driven portrait (models/portrait.py) on the bundled Kinema-Tiny Portrait.

- Length: frames = ceil(seconds x fps) exactly, for 1 s, 10 s and 60 s of audio (and awkward sample counts and
  rates); the tensor memory alive between windows flat between 10 s and 60 s.
- Sync, measured from pixels: the mouth opening correlates with the voice's loudness envelope (Pearson r), on the
  shipped espeak-ng voice and on held-out synthetic voices.
- Identity: the face's colour and position stay on the portrait's in every window.
"""
from __future__ import annotations

import gc
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch

from kinema.models.portrait import animate_portrait, animate_portrait_windows, portrait_num_frames
from kinema.models.tiny.portrait_data import loudness_features
from training.tiny import portrait_checker as C
from training.tiny.portrait_data import random_face, render_faces, sample_portrait, synth_voice

ASSETS = Path(__file__).resolve().parents[2] / "workflows" / "assets"


@pytest.fixture(scope="module")
def model():
    from kinema.models.families.tiny_portrait import KinemaTinyPortraitFamily
    from kinema.models.tiny.portrait_pipeline import DEFAULT_WEIGHTS
    return KinemaTinyPortraitFamily.load(DEFAULT_WEIGHTS, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def voice():
    data, rate = sf.read(str(ASSETS / "voice.wav"), dtype="float32")
    return torch.from_numpy(data).view(1, -1), rate


def _portrait() -> torch.Tensor:
    return sample_portrait(128).unsqueeze(0)                                             # (1, 128, 128, 3)


# ---- length --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("samples, rate, fps, frames", [
    (16000, 16000, 25, 25), (16001, 16000, 25, 26), (15999, 16000, 25, 25), (1, 16000, 25, 1),
    (48000, 48000, 29.97, 30), (44100 * 10, 44100, 24, 240), (73082, 16000, 25, 115)])
def test_frame_count_is_ceil_of_seconds_times_fps(samples, rate, fps, frames):
    assert portrait_num_frames(samples, rate, fps) == frames


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="`fps`"):
        portrait_num_frames(100, 16000, 0)
    with pytest.raises(ValueError, match="`audio`"):
        portrait_num_frames(0, 16000, 25)


def test_loudness_features_follow_the_level():
    wav = torch.cat([torch.zeros(1600), 0.01 * torch.randn(1600), 0.5 * torch.randn(1600)])
    f = loudness_features(wav, 16000, 10, 3)
    assert f[0] == 0 and 0 < f[1] < f[2] and f[2] <= 1
    assert loudness_features(torch.zeros(1, 8000), 16000, 25, 13).abs().sum() == 0       # silence: closed mouth


@pytest.mark.parametrize("seconds", [1, 10])
def test_clip_lasts_as_long_as_the_audio(model, seconds):
    g = torch.Generator().manual_seed(seconds)
    wav = synth_voice(g, seconds, 16000).view(1, -1)
    video = animate_portrait(model, _portrait(), wav, 16000, 25, num_inference_steps=1)
    assert video.shape == (25 * seconds, 32, 32, 3) and math.isclose(len(video) / 25, seconds)


@pytest.mark.parametrize("samples, frames", [(1, 1), (3000, 5), (16000 * 2 // 5 + 1, 11)])
def test_short_audio_and_seeds(model, samples, frames):
    """Shorter than one window, or one window and a bit: still exact; the same seed gives the same clip."""
    wav = 0.3 * torch.randn(1, samples, generator=torch.Generator().manual_seed(0))
    a = animate_portrait(model, _portrait(), wav, 16000, 25, seed=5, num_inference_steps=2)
    b = animate_portrait(model, _portrait(), wav, 16000, 25, seed=5, num_inference_steps=2)
    assert len(a) == frames and torch.equal(a, b)


def _live_tensor_bytes() -> int:
    """Bytes of every tensor storage reachable from Python now, each storage counted once (after a collection)."""
    gc.collect()
    storages = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.device.type != "meta":   # type(): no __class__ on proxies
            try:
                storage = obj.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()
            except (RuntimeError, NotImplementedError):      # fake/functional tensors an earlier compile left: no data
                continue
    return sum(storages.values())


def test_sixty_seconds_exact_and_memory_flat(model):
    """60 s at 25 fps -> 1500 frames, streamed window by window, and the working set is one window whatever the
    length: the tensor memory alive between windows (every storage reachable from Python, sampled as windows are
    yielded) grows no more for 60 s than for 10 s. Counted exactly, not read from the process RSS, whose allocator
    noise (~8 MiB) is as large as what a leak of the 1250 extra frames would add (15 MiB)."""
    def run(seconds):
        wav = synth_voice(torch.Generator().manual_seed(7), seconds, 8000).view(1, -1)   # made before measuring
        base, growth, count = _live_tensor_bytes(), 0, 0
        for k, (start, frames) in enumerate(animate_portrait_windows(model, _portrait(), wav, 8000, 25,
                                                                     num_inference_steps=1)):
            assert start == count
            count += len(frames)
            if k % 8 == 0 or count == 25 * seconds:                  # every 8th window, and the last one
                growth = max(growth, _live_tensor_bytes() - base)
        return count, growth / 2**20
    n10, growth10 = run(10)
    n60, growth60 = run(60)
    assert (n10, n60) == (250, 1500)
    print(f"live tensor growth: 10 s {growth10:.3f} MiB, 60 s {growth60:.3f} MiB")
    frame_mib = 32 * 32 * 3 * 4 / 2**20
    assert growth60 - growth10 < 50 * frame_mib, (growth10, growth60)   # a leak of the extra frames: 1250


def test_prompt_is_ignored_with_a_warning(model, voice):
    with pytest.warns(UserWarning, match="no text encoder"):
        video = animate_portrait(model, _portrait(), voice[0][:, :8000], voice[1], 25, num_inference_steps=1,
                                 prompt="a happy singer")
    assert len(video) == 13


# ---- sync and identity (from pixels) ---------------------------------------------------------------------------
def test_mouth_follows_the_voice_loudness(model, voice):
    """The shipped espeak-ng speech (4.57 s, 115 frames, 17 windows): Pearson r between the mouth opening measured
    from pixels and the loudness envelope (per-frame RMS in dB, what Save Video plays) >= 0.7."""
    wav, rate = voice
    portrait = _portrait()
    video = animate_portrait(model, portrait, wav, rate, 25, seed=42, num_inference_steps=8)
    face = C.find_face(model.fit_portrait(portrait)[0])
    mouth = C.mouth_openings(video, face)
    envelope = loudness_features(wav, rate, 25, len(video))
    r = C.pearson(mouth, envelope)
    print(f"espeak voice: Pearson r = {r:.3f}")
    assert r >= 0.7, r


def test_mouth_follows_synthetic_voices_on_unseen_faces(model):
    g = torch.Generator().manual_seed(123)                 # training used seeds 0..2
    specs = [random_face(g) for _ in range(4)]
    refs = render_faces(specs, torch.zeros(4, 1))[:, :, 0].permute(0, 2, 3, 1)            # (4, 32, 32, 3)
    rs = []
    for i in range(4):
        wav = synth_voice(g, 2.0, 8000)
        video = animate_portrait(model, refs[i:i + 1], wav, 8000, 25, seed=i, num_inference_steps=6)
        rs.append(C.pearson(C.mouth_openings(video, C.find_face(refs[i])), loudness_features(wav, 8000, 25, 50)))
    print("synthetic voices: r =", [round(r, 3) for r in rs])
    assert min(rs) >= 0.6 and sum(rs) / len(rs) >= 0.75, rs


def test_identity_is_held_across_windows(model, voice):
    """10 s of speech (the clip looped), 36 windows: in every window the face keeps the portrait's colour (RGB
    distance of the mean skin colour < 0.05) and position (skin centroid within 0.75 px)."""
    wav, rate = voice
    wav = wav.repeat(1, 3)[:, : 10 * rate]
    portrait = _portrait()
    ref = model.fit_portrait(portrait)[0]
    face = C.find_face(ref)
    ref_colour, ref_pos = C.face_tracks(ref[None], face)
    colours, positions = [], []
    for _, frames in animate_portrait_windows(model, portrait, wav, rate, 25, seed=3, num_inference_steps=4):
        colour, pos = C.face_tracks(frames, face)
        colours.append((colour.mean(0) - ref_colour[0]).norm().item())
        positions.append((pos.mean(0) - ref_pos[0]).norm().item())
    print(f"identity over {len(colours)} windows: colour drift max {max(colours):.4f}, "
          f"position drift max {max(positions):.3f} px")
    assert len(colours) == 36
    assert max(colours) < 0.05 and max(positions) < 0.75, (colours, positions)
