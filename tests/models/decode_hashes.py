"""Helper of test_reproducible.py, run as a script in fresh processes: decode fixed latents of Wan, AnimateDiff and
Kinema-Tiny through every decode path and print one JSON object of sha256 prefixes.

    python decode_hashes.py MODELS_DIR WORK_DIR

Paths: the Video Decode node (frames), Decode And Save Video (mp4, latents kept), `kinema decode` of those latents
(mp4), and the Video Decode frames written by media.save_video (mp4): each whole frame and in 2 x 2 tiles (Kinema-Tiny
decodes in one call, never tiled). Keys: "<model>/<tiling>/<path>".
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path

import torch

CASES = {"fixture-wan-t2v": (16, 5, 8), "fixture-animatediff": (4, 6, 8), "kinema-tiny-video": (8, 5, 8)}  # C, f, h=w


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def decode_all(models: Path, work: Path) -> dict[str, str]:
    from kinema.host.cli import main as cli
    from kinema.models import media, vae_tiling
    from kinema.models.video_io import read_video
    from kinema.nodes import env
    from kinema.nodes.decode import KinemaDecodeAndSave, KinemaVideoDecode
    from kinema.nodes.loaders import KinemaLoadVideoModel
    dirs = {k: work / k for k in ("input", "output", "temp")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    with env.using(env.Folders.of(models, dirs["input"], dirs["output"], dirs["temp"])):
        for name, (c, f, s) in CASES.items():
            model, = KinemaLoadVideoModel().load(name, "auto", "cpu", "auto")
            latent = {"samples": torch.randn(1, c, f, s, s, generator=torch.Generator().manual_seed(3))}
            tile_px = s * model.spatial_ratio // 2
            for tag, tiling in (("whole", None), ("tiled", vae_tiling.TileSettings(tile_px=tile_px))):
                if tiling is not None and name == "kinema-tiny-video":
                    continue
                key = f"{name}/{tag}"
                frames, = KinemaVideoDecode().decode(model, latent, tiling)
                out[f"{key}/video_decode"] = _sha(frames.numpy().tobytes())
                media.save_video(frames, work / f"{name}_{tag}_frames.mp4", 16.0, "mp4")
                out[f"{key}/frames_mp4"] = _sha((work / f"{name}_{tag}_frames.mp4").read_bytes())
                KinemaDecodeAndSave().save(model, latent, 16.0, "mp4", f"{name}_{tag}", tiling=tiling,
                                           keep_latents=True)
                video = dirs["output"] / f"{name}_{tag}_00001_.mp4"
                out[f"{key}/decode_and_save_mp4"] = _sha(video.read_bytes())
                out[f"{key}/decode_and_save_pixels"] = _sha(read_video(video)[0].numpy().tobytes())
                again = work / f"{name}_{tag}_kinema_decode.mp4"
                args = ["decode", str(vae_tiling.latents_path_for(video)), "--output", str(again), "--quiet",
                        "--models-dir", str(models)] + (["--tile-size", str(tile_px)] if tiling else [])
                with contextlib.redirect_stdout(sys.stderr):
                    assert cli(args) == 0, args
                out[f"{key}/kinema_decode_mp4"] = _sha(again.read_bytes())
                out[f"{key}/kinema_decode_pixels"] = _sha(read_video(again)[0].numpy().tobytes())
    return out


if __name__ == "__main__":
    print(json.dumps(decode_all(Path(sys.argv[1]), Path(sys.argv[2])), sort_keys=True))
