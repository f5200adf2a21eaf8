"""nodes/audio.py as a host calls them, on real files: wav, flac, ogg, mp3 and m4a written with soundfile and
PyAV are read back; saved files land in the configured folders and the ui dicts point at them."""
from __future__ import annotations

import json
import math

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from kinema.models import media
from kinema.nodes import env, loaders
from kinema.nodes import audio as nodes

RATE = 44100


@pytest.fixture
def dirs(tmp_path):
    """Fresh input/output/temp folders for the nodes; the previous settings come back afterwards."""
    d = {k: tmp_path / k for k in ("input", "output", "temp")}
    for p in d.values():
        p.mkdir()
    with env.using(env.Folders.of(input=d["input"], output=d["output"], temp=d["temp"])):
        yield d


def tones(n=RATE, rate=RATE) -> np.ndarray:
    """(2, n) float32: 440 Hz left, 1 kHz right (not periodic over an AAC priming delay: misalignment shows)."""
    t = np.arange(n) / rate
    return np.stack([0.5 * np.sin(2 * math.pi * 440 * t), 0.3 * np.sin(2 * math.pi * 1000 * t)]).astype(np.float32)


def write_av(path, codec: str, data: np.ndarray, rate=RATE) -> None:
    """Encode with PyAV in 1000-sample frames (any frame size: the encoder's FIFO regroups)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        stream.bit_rate = 192000
        for i in range(0, data.shape[1], 1000):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, i:i + 1000]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = rate, i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


WRITERS = {
    "wav": lambda p, d: sf.write(str(p), d.T, RATE, subtype="PCM_16"),
    "flac": lambda p, d: sf.write(str(p), d.T, RATE, subtype="PCM_16"),
    "ogg": lambda p, d: sf.write(str(p), d.T, RATE, format="OGG", subtype="VORBIS"),
    "mp3": lambda p, d: write_av(p, "libmp3lame", d),
    "m4a": lambda p, d: write_av(p, "aac", d),
}


@pytest.mark.parametrize("ext,tolerance", [("wav", 1e-4), ("flac", 1e-4), ("ogg", 0.05), ("mp3", 0.05),
                                           ("m4a", 0.05)])
def test_load_audio_reads_real_files(dirs, ext, tolerance):
    data = tones()
    WRITERS[ext](dirs["input"] / f"tones.{ext}", data)
    assert f"tones.{ext}" in nodes.KinemaLoadAudio.INPUT_TYPES()["required"]["audio"][0]
    assert nodes.KinemaLoadAudio.VALIDATE_INPUTS(f"tones.{ext}") is True
    (out,) = nodes.KinemaLoadAudio().load(f"tones.{ext}", 0, "keep")
    wav = out["waveform"]
    assert out["sample_rate"] == RATE and wav.shape == (1, 2, RATE) and wav.dtype == torch.float32
    err = (wav[0].numpy() - data)[:, 2000:-2000]                     # lossy codecs: edges aside
    assert np.sqrt((err ** 2).mean()) / np.sqrt((data ** 2).mean()) < tolerance, ext


def test_load_audio_resamples_and_mixes(dirs):
    WRITERS["flac"](dirs["input"] / "tones.flac", tones())
    (out,) = nodes.KinemaLoadAudio().load("tones.flac", 16000, "mono")
    assert out["sample_rate"] == 16000 and out["waveform"].shape == (1, 1, 16000)
    expect = tones(16000, 16000).mean(axis=0)
    assert np.abs(out["waveform"][0, 0].numpy() - expect)[64:-64].max() < 2e-3


def test_load_audio_reads_the_sound_track_of_a_saved_video(dirs):
    """Sync at the file level: Save Video's mp4 holds frames / fps of sound, from 0, and it loads back so (to the
    millisecond: the mp4 edit list that cuts AAC's priming and padding counts in the movie's 1/1000 s)."""
    wave = torch.from_numpy(tones(20000, 16000))[None]
    media.save_video(torch.rand(17, 16, 16, 3), dirs["input"] / "clip.mp4", 16,
                     audio={"waveform": wave, "sample_rate": 16000})
    (out,) = nodes.KinemaLoadAudio().load("clip.mp4", 0, "keep")
    assert out["sample_rate"] == 16000 and abs(out["waveform"].shape[-1] - 17000) <= 16     # 17 frames at 16 fps
    err = out["waveform"][0, :, 2000:16000].numpy() - wave[0, :, 2000:16000].numpy()           # starts at 0
    assert np.sqrt((err ** 2).mean()) < 0.05


def test_unreadable_or_missing_file_is_a_clear_error(dirs):
    (dirs["input"] / "broken.wav").write_bytes(b"RIFF....WAVEthis is not audio")
    with pytest.raises(ValueError, match=r"broken\.wav.*re-export it as WAV or FLAC"):
        nodes.KinemaLoadAudio().load("broken.wav", 0, "keep")
    message = nodes.KinemaLoadAudio.VALIDATE_INPUTS("nowhere.wav")
    assert "nowhere.wav" in message and "Fix:" in message
    assert nodes.KinemaLoadAudio.IS_CHANGED("nowhere.wav") == "missing:nowhere.wav"


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_save_audio_writes_each_clip_and_points_the_ui_at_it(dirs, fmt):
    batch = torch.from_numpy(np.stack([tones(8000), -tones(8000)]))            # (2, 2, 8000)
    result = nodes.KinemaSaveAudio().save({"waveform": batch, "sample_rate": RATE}, fmt, "sub/clip",
                                          prompt={"1": {}}, extra_pnginfo={"workflow": {"nodes": []}})
    entries = result["ui"]["audio"]
    assert result["result"] == () and [e["filename"] for e in entries] == [f"clip_00001_.{fmt}", f"clip_00002_.{fmt}"]
    for entry, clip in zip(entries, batch):
        assert entry["subfolder"] == "sub" and entry["type"] == "output"
        data, rate = sf.read(str(dirs["output"] / "sub" / entry["filename"]), dtype="float32", always_2d=True)
        assert rate == RATE and data.shape == (8000, 2) and np.abs(data.T - clip.numpy()).max() < 1 / 32767 + 1e-6
    if fmt == "flac":    # the workflow travels inside, as ComfyUI's Save Audio stores it
        with av.open(str(dirs["output"] / "sub" / entries[0]["filename"])) as c:
            assert json.loads(c.metadata["workflow"]) == {"nodes": []} and json.loads(c.metadata["prompt"])
    assert not [p for p in dirs["output"].rglob("*") if p.name.startswith(".")]     # no temporary files left


def test_preview_audio_goes_to_temp(dirs):
    result = nodes.KinemaPreviewAudio().preview({"waveform": torch.zeros(1, 1, 100), "sample_rate": 8000})
    (entry,) = result["ui"]["audio"]
    assert entry["type"] == "temp" and (dirs["temp"] / entry["filename"]).is_file()
    assert not list(dirs["output"].iterdir())


def test_save_audio_rejects_what_is_not_audio(dirs):
    with pytest.raises(ValueError, match="`audio`"):
        nodes.KinemaSaveAudio().save({"waveform": torch.zeros(2, 100), "sample_rate": 8000}, "wav", "x")
    with pytest.raises(ValueError, match="sample_rate"):
        nodes.KinemaSaveAudio().save({"waveform": torch.zeros(1, 1, 100), "sample_rate": 0}, "wav", "x")


def test_audio_player_widget_is_declared_for_the_frontend():
    """frontend 1.58.1 plays {"audio": [...]} in an `audioUI` widget that custom nodes must declare (optional)."""
    for cls in (nodes.KinemaLoadAudio, nodes.KinemaSaveAudio, nodes.KinemaPreviewAudio):
        spec = cls.INPUT_TYPES()
        assert spec["optional"]["audioUI"][0] == "AUDIO_UI" and "audioUI" not in spec["required"]
    assert nodes.KinemaLoadAudio.INPUT_TYPES()["required"]["audio"][1]["audio_upload"] is True


def test_generation_nodes_on_the_fixtures(kinema_dirs):
    names = loaders.KinemaLoadAudioModel.INPUT_TYPES()["required"]["model"][0]
    assert set(names) == {"fixture-stable-audio", "fixture-ltx2", "kinema-tiny-audio"}   # not video-only folders
    (sa,) = loaders.KinemaLoadAudioModel().load("fixture-stable-audio", "auto", "cpu", "fp32")
    (sound,) = nodes.KinemaTextToAudio().generate(sa, "a bell", "", 0.3, 2, 7.0, 1)
    assert sound["waveform"].shape == (1, 2, 2400) and sound["sample_rate"] == 8000
    (ltx,) = loaders.KinemaLoadAudioModel().load("fixture-ltx2", "auto", "cpu", "fp32")
    (sound,) = nodes.KinemaVideoToAudio().generate(ltx, torch.rand(5, 24, 40, 3), 8.0, 1, 1.0, 0, prompt="rain")
    assert sound["waveform"].shape == (1, 2, 10000) and sound["sample_rate"] == 16000   # 5 frames / 8 fps
