"""Decode And Save Video streams chunks into the file; a failed decode leaves the latents and no video; Load Latent
and `kinema decode` resume it."""
from __future__ import annotations

import json

import av
import pytest
import torch

from kinema.host import cli
from kinema.models import media, vae_tiling
from kinema.nodes.decode import (KinemaDecodeAndSave, KinemaLoadLatent, KinemaTileOptions, KinemaVideoDecode,
                                 KinemaVideoEncode)

FRAMES = 17                                   # the `latent` fixture (tests/nodes/conftest.py): 17 frames of 32x48


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_decode_and_save_streams_chunks(wan, latent, kinema_dirs, monkeypatch, decode_video):
    chunks = []
    real = media.VideoWriter.write
    monkeypatch.setattr(media.VideoWriter, "write", lambda self, frames, alpha=None: (
        chunks.append(frames.shape[0]), real(self, frames, alpha))[1])
    tiling = KinemaTileOptions().options(memory_mb=0, tile_size=0, tile_overlap=0, chunk_frames=1)[0]
    out = KinemaDecodeAndSave().save(wan, latent, 16.0, "mp4", "Kinema/long", tiling=tiling, prompt={"1": {}})
    assert out["ui"] == {"images": [{"filename": "long_00001_.mp4", "subfolder": "Kinema", "type": "output"}],
                         "animated": [True]}
    assert chunks == [1, 4, 4, 4, 4]                         # frame by chunk, never the whole clip at once
    info = media.read_video_info(kinema_dirs["output"] / "Kinema" / "long_00001_.mp4")
    assert (info.frames, info.width, info.height, info.fps) == (FRAMES, 48, 32, 16.0)
    assert _files(kinema_dirs["output"]) == ["Kinema/long_00001_.mp4"]         # latents deleted after success
    frames = KinemaVideoDecode().decode(wan, latent, tiling)[0]                 # the same decode, in memory
    assert frames.shape == (FRAMES, 32, 48, 3)
    got, _ = decode_video(kinema_dirs["output"] / "Kinema" / "long_00001_.mp4")
    assert (got - frames).abs().mean() < 0.03                                   # the file holds those frames (H.264)


def test_failed_decode_keeps_latents_and_resumes(wan, latent, kinema_dirs, monkeypatch, capsys):
    decoder = wan.vae.decoder
    calls = []

    def flaky(*args, **kwargs):                  # the VAE dies midway through the clip
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return type(decoder).forward(decoder, *args, **kwargs)

    monkeypatch.setattr(decoder, "forward", flaky)
    audio = {"waveform": 0.1 * torch.randn(1, 2, 16000), "sample_rate": 16000}
    node = KinemaDecodeAndSave()
    with pytest.raises(RuntimeError, match="simulated"):
        node.save(wan, latent, 16.0, "mp4", "Kinema/long", audio=audio, tiling=vae_tiling.TileSettings(chunk_frames=1),
                  prompt={"7": {"class_type": "X"}})
    monkeypatch.undo()
    out = kinema_dirs["output"]
    assert _files(out) == ["Kinema/long_00001_.latents.safetensors"]          # no video, no temp file
    saved, info, saved_audio = vae_tiling.load_latents(out / "Kinema" / "long_00001_.latents.safetensors")
    assert torch.equal(saved, latent["samples"]) and saved_audio is not None
    assert (info.family, info.model, info.frames, info.fps, info.format) == ("wan", "fixture-wan-t2v", FRAMES,
                                                                             16.0, "mp4")

    # 1. resume with the CLI: the video lands where it would have been
    rc = cli.main(["decode", str(out / "Kinema" / "long_00001_.latents.safetensors"), "--quiet",
                   "--models-dir", str(kinema_dirs["models"])])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    video = out / "Kinema" / "long_00001_.mp4"
    assert report["video"] == str(video) and report["frames"] == FRAMES
    info_v = media.read_video_info(video)
    assert info_v.frames == FRAMES and info_v.audio is not None and abs(info_v.audio.duration - FRAMES / 16) < 0.07
    with av.open(str(video)) as c:
        assert c.metadata["prompt"] == json.dumps({"7": {"class_type": "X"}})
    assert cli.main(["decode", str(out / "Kinema" / "long_00001_.latents.safetensors"), "--quiet",
                     "--models-dir", str(kinema_dirs["models"])]) == cli.EXIT_INVALID      # never overwritten
    assert "already exists" in capsys.readouterr().err

    # 2. resume with Load Latent -> Decode And Save Video
    name = "Kinema/long_00001_.latents.safetensors [output]"
    assert name in KinemaLoadLatent.INPUT_TYPES()["required"]["latents"][0]
    assert KinemaLoadLatent.VALIDATE_INPUTS(name) is True
    loaded, fps = KinemaLoadLatent().load(name)
    assert fps == 16.0 and loaded["kinema_family"] == "wan" and torch.equal(loaded["samples"], latent["samples"])
    node.save(wan, loaded, fps, "webm", "Kinema/resumed", keep_latents=True)
    assert media.read_video_info(out / "Kinema" / "resumed_00001_.webm").frames == FRAMES
    assert (out / "Kinema" / "resumed_00001_.latents.safetensors").is_file()  # kept on request


def test_bad_inputs_leave_nothing(wan, latent, kinema_dirs, models_dir):
    from kinema.models.families import load_model
    node = KinemaDecodeAndSave()
    with pytest.raises(ValueError, match="`audio` cannot be stored in gif"):
        node.save(wan, latent, 16.0, "gif", "x", audio={"waveform": torch.zeros(1, 1, 10), "sample_rate": 8000})
    with pytest.raises(ValueError, match="`latent` must have the model's 16 latent channels"):
        node.save(wan, {"samples": torch.zeros(1, 4, 2, 4, 4)}, 16.0, "mp4", "x")
    ad = load_model(models_dir / "diffusers" / "fixture-animatediff")
    with pytest.raises(ValueError, match="`latent` was made by a wan model"):
        node.save(ad, {"samples": torch.zeros(1, 4, 2, 4, 4), "kinema_family": "wan"}, 16.0, "mp4", "x")
    assert _files(kinema_dirs["output"]) == []
    assert "not found" in KinemaLoadLatent.VALIDATE_INPUTS("nope.latents.safetensors")


def test_video_encode_with_tiling(wan):
    frames = torch.rand(1, 64, 64, 3)
    tiling = KinemaTileOptions().options(memory_mb=0, tile_size=48, tile_overlap=16, chunk_frames=0)[0]
    tiled = KinemaVideoEncode().encode(wan, frames, 5, tiling)[0]["samples"]
    plain = KinemaVideoEncode().encode(wan, frames, 5)[0]["samples"]
    assert tiled.shape == plain.shape == (1, 16, 2, 8, 8)
    assert (tiled - plain).abs().mean() < 0.2 * plain.abs().mean()


def test_tile_by_tile_decode_in_the_nodes_reports_progress(wan, latent, kinema_dirs, monkeypatch):
    """A plan that goes tile by tile (what a large frame gets when its tiles' caches do not fit): Video Decode gives
    the streaming order's frames bit for bit, reports progress as the VAE calls go (frames come only at the end),
    and Decode And Save writes the whole clip."""
    from kinema.nodes import env
    streaming = vae_tiling.TilePlan(chunk=2, tile_h=3, tile_w=4, overlap=1)
    assert streaming.num_tiles(4, 6) == 4
    import dataclasses
    monkeypatch.setattr(vae_tiling, "plan", lambda *a, **k: streaming)
    expected = KinemaVideoDecode().decode(wan, latent)[0]
    monkeypatch.setattr(vae_tiling, "plan", lambda *a, **k: dataclasses.replace(streaming, by_tile=True))
    seen = []
    with env.reporting(lambda value, total, preview: seen.append((value, total)), previews=False):
        frames = KinemaVideoDecode().decode(wan, latent)[0]
    assert torch.equal(frames, expected) and frames.shape == (FRAMES, 32, 48, 3)
    assert len(seen) == 4 * 3 and seen == sorted(seen) and seen[-1] == (FRAMES, FRAMES)    # 4 tiles x 3 chunks
    KinemaDecodeAndSave().save(wan, latent, 16.0, "mp4", "Kinema/bytile", prompt={"1": {}})
    assert media.read_video_info(kinema_dirs["output"] / "Kinema" / "bytile_00001_.mp4").frames == FRAMES
