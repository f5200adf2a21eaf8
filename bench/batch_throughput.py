"""Throughput of `kinema batch` against sequential `kinema run` calls, on the same 16-job sweep, in one run.

The sweep: workflows/text_to_video.json (Kinema-Tiny, bundled) x 4 prompts x 4 seeds = 16 jobs. Measured, each as a
whole command from start to exit (imports, Ray start, model loads, sampling, encoding, writing the files):
  * sequential: 16 `kinema run --set 2.text=... --set 4.seed=...` processes, one after another (each pays the
    imports and the model load: what a shell loop over prompts and seeds does);
  * batch, one process: `kinema batch --sweep ... --sweep ...` (imports and model load once, jobs in turn);
  * batch on Ray: `kinema batch ... --ray --workers 2` (a local Ray started for the run, 2 workers of 1 CPU each,
    each loading the model once).
Prints the wall times and the ratios sequential / batch, and checks that the one-process batch wrote the same
bytes as the sequential runs (same thread count). Ray workers run torch at 1 thread each (the CPU they reserve),
and on a CPU float results depend on the thread count, so their videos are compared with the tests' references,
not here. Usage: python bench/batch_throughput.py [--prompts 4] [--seeds 4] [--workers 2] [--steps N]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WF = REPO / "workflows" / "text_to_video.json"
PROMPTS = ["a red circle moves right", "a blue star moves up", "a green square bounces", "a yellow triangle spins",
           "a white circle grows", "a purple star shrinks", "a red square moves left", "a blue triangle moves down"]
KINEMA = [sys.executable, "-m", "kinema.host.cli"]


def _timed(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t


def _shas(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.mp4")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4, help="prompts in the sweep (at most 8)")
    ap.add_argument("--seeds", type=int, default=4, help="seeds in the sweep")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers")
    ap.add_argument("--steps", type=int, default=0, help="sampler steps (default 0: the workflow's own, 10)")
    args = ap.parse_args()
    prompts, seeds = PROMPTS[:args.prompts], list(range(1, args.seeds + 1))
    n = len(prompts) * len(seeds)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--set", f"4.steps={args.steps}"] if args.steps else []
    ray_ok = subprocess.run([sys.executable, "-c", "import ray"], capture_output=True).returncode == 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "prompts.txt").write_text("\n".join(prompts) + "\n")
        (tmp / "models").mkdir()
        dirs = ["--models-dir", str(tmp / "models"), "--input-dir", str(tmp / "input"), "--quiet"]
        print(f"{n} jobs ({len(prompts)} prompts x {len(seeds)} seeds) of {WF.name} on Kinema-Tiny, "
              f"{os.cpu_count()} CPU cores (load average {os.getloadavg()[0]:.1f} at the start: other work on "
              f"the machine skews the ratios); whole commands, wall time")

        seq = 0.0
        for i, (text, seed) in enumerate((t, s) for t in prompts for s in seeds):
            seq += _timed([*KINEMA, "run", str(WF), "--set", f"2.text={text}", "--set", f"4.seed={seed}", *common,
                           *dirs, "--output-dir", str(tmp / "seq" / f"{i + 1:04d}")], env)
        print(f"  sequential kinema run x{n}:     {seq:7.1f} s  ({seq / n:.2f} s/job)")

        sweep = ["--sweep", f"2.text={tmp / 'prompts.txt'}", "--sweep", f"4.seed=1..{len(seeds)}", *common]
        local = _timed([*KINEMA, "batch", str(WF), *sweep, *dirs, "--output-dir", str(tmp / "local"), "--name", "b"],
                       env)
        print(f"  kinema batch, one process:      {local:7.1f} s  ({local / n:.2f} s/job)  "
              f"-> {seq / local:.2f}x sequential")
        seq_files = {int(k.split("/", 1)[0]): v for k, v in _shas(tmp / "seq").items()}   # job index -> sha
        local_files = {}
        for rec in map(json.loads, (tmp / "local" / "b" / "manifest.jsonl").read_text().splitlines()):
            (f,) = rec["files"]
            local_files[rec["job"]] = hashlib.sha256((tmp / "local" / "b" / f).read_bytes()).hexdigest()
        same = local_files == seq_files and len(seq_files) == n
        print(f"    same bytes as the sequential runs: {'yes' if same else 'NO'}")

        if ray_ok:
            ray_s = _timed([*KINEMA, "batch", str(WF), *sweep, *dirs, "--output-dir", str(tmp / "ray"), "--name",
                            "b", "--ray", "--workers", str(args.workers)], env)
            recs = [json.loads(x) for x in (tmp / "ray" / "b" / "manifest.jsonl").read_text().splitlines()]
            loads = sum("1" in r["executed"] for r in recs)
            busy = sum(r["seconds"] for r in recs)
            print(f"  kinema batch --ray, {args.workers} workers:  {ray_s:7.1f} s  ({ray_s / n:.2f} s/job)  "
                  f"-> {seq / ray_s:.2f}x sequential, {local / ray_s:.2f}x one-process batch")
            print(f"    model loads: {loads} (one per worker); time inside jobs {busy:.1f} s, so Ray start + "
                  f"worker start ~ {ray_s - busy / args.workers:.1f} s")
        else:
            print("  kinema batch --ray: skipped (Ray not installed: pip install -e '.[ray]')")
        print(f"  load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
