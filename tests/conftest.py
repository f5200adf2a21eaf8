"""Shared fixtures: models_dir (tiny random-weight models of every family, built once per session in their real
layout), kinema_dirs (the nodes pointed at them and at fresh input/output/temp folders), decode_video (a saved
video read back whole, alpha included) and one_thread."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models folder holding diffusers/<name> for every name in models/fixtures.FIXTURES (Wan T2V, I2V and VACE,
    AnimateDiff, Stable Audio, LTX-2), built once per session; tests read it and never change it."""
    from kinema.models.fixtures import write_fixtures
    root = tmp_path_factory.mktemp("models")
    write_fixtures(root)
    return root


@pytest.fixture
def kinema_dirs(models_dir, tmp_path):
    """Point the nodes at the fixture models and fresh input/output/temp folders (for this test only)."""
    from kinema.nodes import env
    dirs = {k: tmp_path / k for k in ("input", "output", "temp")}
    for d in dirs.values():
        d.mkdir()
    with env.using(env.Folders.of(models_dir, dirs["input"], dirs["output"], dirs["temp"])):
        yield {"models": models_dir, **dirs}


def _decode_video(path):
    """Every frame of a saved video file: (frames (F, H, W, 3) float32 0..1, opacity (F, H, W) or None without
    alpha). webp/gif through Pillow; mp4/webm through PyAV, webm alpha with libvpx (FFmpeg's VP9 decoder drops it)."""
    import av
    import numpy as np
    import torch
    from PIL import Image
    from kinema.models.media import read_video_info
    info = read_video_info(path)
    if info.codec in ("webp", "gif"):
        with Image.open(path) as im:
            rgba = []
            for i in range(info.frames):
                im.seek(i)
                rgba.append(np.asarray(im.convert("RGBA")))
    else:
        with av.open(str(path)) as c:
            vs = c.streams.video[0]
            if info.has_alpha and vs.codec_context.name == "vp9":
                dec = av.codec.CodecContext.create("libvpx-vp9", "r")
                rgba = [f.to_ndarray(format="rgba") for p in c.demux(vs) for f in dec.decode(p)]
            else:
                rgba = [f.to_ndarray(format="rgba") for f in c.decode(vs)]
    arr = torch.from_numpy(np.stack(rgba)).float() / 255.0                                   # (F, H, W, 4)
    return arr[..., :3].contiguous(), (arr[..., 3].contiguous() if info.has_alpha else None)


@pytest.fixture(scope="session")
def decode_video():
    """decode_video(path) -> (frames (F, H, W, 3) 0..1, opacity (F, H, W) or None): a saved video read back whole,
    alpha included (the runtime streams videos through models/video_io.py, which drops alpha)."""
    return _decode_video


@pytest.fixture(scope="module")
def one_thread():
    """The fixture models are tiny: one torch thread is faster than two fighting over a shared 2-core machine
    (and CPU float sums then do not depend on the machine's core count)."""
    import torch
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
