"""Same latents, same file: every decode path gives bit-identical frames and byte-identical videos in fresh processes.

tests/models/decode_hashes.py decodes fixed latents of Wan, AnimateDiff (fixtures) and Kinema-Tiny through Video
Decode, Decode And Save Video and `kinema decode`, whole frame and tiled, and hashes frames and files. It runs in
three fresh processes at the same thread count, each with a different MALLOC_PERTURB_ (glibc then fills freshly
allocated heap memory with a different byte): whatever reads memory nobody wrote (the bug of issue 21: x264's AVX-512
look-ahead, see media._x264_exact) gives different results in each, every time, instead of now and then.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HELPER = Path(__file__).with_name("decode_hashes.py")
PERTURB = ("", "85", "170")          # no fill, then two different fills


@pytest.fixture(scope="module")
def runs(models_dir, tmp_path_factory) -> list[dict[str, str]]:
    procs = []
    for k, perturb in enumerate(PERTURB):
        work = tmp_path_factory.mktemp(f"run{k}")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "MALLOC_PERTURB_": perturb}
        procs.append(subprocess.Popen([sys.executable, str(HELPER), str(models_dir), str(work)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def test_every_decode_path_is_bit_identical_in_fresh_processes(runs):
    first = runs[0]
    assert len(first) == 5 * 6                  # Wan and AnimateDiff whole + tiled, Kinema-Tiny whole; 6 hashes each
    for other in runs[1:]:
        assert other == first, sorted(k for k in first if other.get(k) != first[k])
    tiled = {k.split("/")[0]: first[k] != first[k.replace("/tiled/", "/whole/")]
             for k in first if "/tiled/video_decode" in k}
    assert tiled == {"fixture-wan-t2v": True, "fixture-animatediff": True}     # tiling really happened


def test_kinema_decode_of_saved_latents_reproduces_the_video(runs):
    """The same frames give the same file (the writer is a function of the frames), so `kinema decode` of the
    latents Decode And Save Video kept writes the very same bytes, and Video Decode's frames saved as a video do too."""
    for run in runs:
        for key in {k.rsplit("/", 1)[0] for k in run}:
            assert run[f"{key}/kinema_decode_mp4"] == run[f"{key}/decode_and_save_mp4"] == run[f"{key}/frames_mp4"], key
            assert run[f"{key}/kinema_decode_pixels"] == run[f"{key}/decode_and_save_pixels"], key
