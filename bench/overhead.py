"""Kinema's overhead against calling the diffusers pipeline directly, on the same tiny models, in one run.

Prints, for Wan (text-to-video) and AnimateDiff:
  * in-process: the node graph (Executor: text encode -> Temporal Sampler -> Video Decode, models already loaded,
    a new seed each repeat) against pipe(...) with the same prompt, size, steps and seed; median of N repeats.
  * whole command: `kinema run` of an API workflow (start, imports, load, sample, decode, write MP4) against a
    Python script that loads the pipeline, calls it and writes the same MP4 with Kinema's writer.
  * peak resident memory of each (separate processes, ru_maxrss).
Usage: python bench/overhead.py [--frames 33] [--size 128] [--steps 10] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

CASES = {"wan": ("fixture-wan-t2v", "WanPipeline"), "animatediff": ("fixture-animatediff", "AnimateDiffPipeline")}

INPROC = textwrap.dedent("""
    import json, resource, statistics, sys, time, torch
    mode, path, frames, size, steps, repeats = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
    torch.manual_seed(0)
    times = []
    if mode == "diffusers":
        from diffusers import DiffusionPipeline
        pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        for seed in range(repeats + 1):
            t = time.perf_counter()
            pipe(prompt="a red ball bounces", negative_prompt="blurry", num_frames=frames, height=size, width=size,
                 num_inference_steps=steps, guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(seed),
                 output_type="pt")
            times.append(time.perf_counter() - t)
    else:
        import kinema
        from kinema.host.executor import Executor
        from kinema.nodes import env
        import pathlib, tempfile
        ex = Executor(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS,
                      folders=env.Folders.of(models=pathlib.Path(path).parent.parent, temp=tempfile.mkdtemp()))
        from kinema.models.families import load_model
        prompt = {
          "2": {"class_type": "KinemaTextEncode", "inputs": {"model": ["1", 0], "text": "a red ball bounces"}},
          "3": {"class_type": "KinemaTextEncode", "inputs": {"model": ["1", 0], "text": "blurry"}},
          "4": {"class_type": "KinemaTemporalSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0],
                "negative": ["3", 0], "length": frames, "width": size, "height": size, "steps": steps, "cfg": 6.0,
                "seed": 0, "scheduler": "default", "shift": 0.0, "denoise": 1.0}},
          "5": {"class_type": "KinemaVideoDecode", "inputs": {"model": ["1", 0], "latent": ["4", 0]}},
          "6": {"class_type": "KinemaPreviewVideo", "inputs": {"images": ["5", 0], "fps": 8.0}}}
        prompt["1"] = {"class_type": "KinemaLoadVideoModel", "inputs": {"model": pathlib.Path(path).name,
                       "family": "auto", "device": "cpu", "dtype": "fp32"}}
        decode_only = []
        for seed in range(repeats + 1):
            prompt["4"]["inputs"]["seed"] = seed
            t = time.perf_counter()
            ex.run(prompt)
            times.append(time.perf_counter() - t)
    times = times[1:]   # the first call warms up (and, for the graph, loads the model)
    print(json.dumps({"median_s": statistics.median(times),
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")

DIRECT_SCRIPT = textwrap.dedent("""
    import sys, torch
    from diffusers import DiffusionPipeline
    from kinema.models.media import save_video
    path, out, frames, size, steps = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
    pipe = DiffusionPipeline.from_pretrained(path, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    video = pipe(prompt="a red ball bounces", negative_prompt="blurry", num_frames=frames, height=size, width=size,
                 num_inference_steps=steps, guidance_scale=6.0, generator=torch.Generator("cpu").manual_seed(0),
                 output_type="pt").frames[0]                      # (F, 3, H, W) 0..1
    save_video(video.permute(0, 2, 3, 1), out, 16.0, "mp4")
""")


def _child(cmd: list[str]) -> tuple[float, float, str]:
    """Run a command; return (wall seconds, its own peak RSS in MB, stdout)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode:
            raise SystemExit(f"{cmd[:3]} failed:\n{err.read()[-3000:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=33)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from kinema.models.fixtures import write_fixtures
    work = Path(tempfile.mkdtemp(prefix="kinema-bench-"))
    write_fixtures(work, names=[c[0] for c in CASES.values()])
    print(f"tiny fixture models, {args.frames} frames (AnimateDiff: 16) at {args.size}x{args.size}, "
          f"{args.steps} steps, cfg 6, CPU, median of {args.repeats}")
    print(f"{'family':12} {'what':34} {'kinema':>9} {'diffusers':>10} {'ratio':>6} {'peak MB k/d':>14}")
    for family, (name, _cls) in CASES.items():
        frames = args.frames if family == "wan" else 16
        path = str(work / "diffusers" / name)
        res = {}
        for mode in ("kinema", "diffusers"):
            _, _, out = _child([sys.executable, "-c", INPROC, mode, path, str(frames), str(args.size),
                                str(args.steps), str(args.repeats)])
            res[mode] = json.loads(out.strip().splitlines()[-1])
        k, d = res["kinema"], res["diffusers"]
        print(f"{family:12} {'in-process graph vs pipe()':34} {k['median_s']:8.3f}s {d['median_s']:9.3f}s "
              f"{k['median_s'] / d['median_s']:6.3f} {k['peak_mb']:6.0f}/{d['peak_mb']:<6.0f}")
        wf = work / f"{family}.json"
        prompt = {
            "1": {"class_type": "KinemaLoadVideoModel", "inputs": {"model": name, "family": "auto",
                                                                   "device": "cpu", "dtype": "fp32"}},
            "2": {"class_type": "KinemaTextEncode", "inputs": {"model": ["1", 0], "text": "a red ball bounces"}},
            "3": {"class_type": "KinemaTextEncode", "inputs": {"model": ["1", 0], "text": "blurry"}},
            "4": {"class_type": "KinemaTemporalSampler", "inputs": {
                "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "length": frames,
                "width": args.size, "height": args.size, "steps": args.steps, "cfg": 6.0, "seed": 0,
                "scheduler": "default", "shift": 0.0, "denoise": 1.0}},
            "5": {"class_type": "KinemaVideoDecode", "inputs": {"model": ["1", 0], "latent": ["4", 0]}},
            "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": ["5", 0], "fps": 16.0, "format": "mp4",
                                                              "filename_prefix": "bench"}}}
        wf.write_text(json.dumps(prompt))
        walls = {"kinema": [], "diffusers": []}
        peaks = {}
        for _ in range(args.repeats):
            w, p, _ = _child([sys.executable, "-m", "kinema.host.cli", "run", str(wf), "--quiet",
                              "--models-dir", str(work), "--output-dir", str(work / "out")])
            walls["kinema"].append(w)
            peaks["kinema"] = p
            w, p, _ = _child([sys.executable, "-c", DIRECT_SCRIPT, path, str(work / "direct.mp4"), str(frames),
                              str(args.size), str(args.steps)])
            walls["diffusers"].append(w)
            peaks["diffusers"] = p
        km, dm = statistics.median(walls["kinema"]), statistics.median(walls["diffusers"])
        print(f"{family:12} {'whole command (kinema run vs script)':34} {km:8.3f}s {dm:9.3f}s {km / dm:6.3f} "
              f"{peaks['kinema']:6.0f}/{peaks['diffusers']:<6.0f}")


if __name__ == "__main__":
    main()
