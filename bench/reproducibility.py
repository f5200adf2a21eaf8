"""How reproducible a run is: the same workflow run in fresh processes at 1 thread twice and at 2 threads, in one run.

Each run is a separate `python` process that executes a workflow of workflows/ headless (the executor of `kinema
run`) against the tiny models (`kinema fixtures` for Wan, AnimateDiff, Stable Audio; Kinema-Tiny bundled), with torch
at the given thread count, and keeps every tensor output of every node (latents, IMAGE frames, AUDIO waveforms) and
the bytes of every file written. A `decode` case also decodes fixed latents with Wan and AnimateDiff, whole frame and
2 x 2 tiles. Prints, per node output, the largest |difference| between the two 1-thread runs (bit-identical: 0) and
between 1 and 2 threads: IMAGE frames in 1/255 steps of 0..1 (what an 8-bit file can show), latents and AUDIO
waveforms as they are; and whether the files written are byte-identical.
Usage: python bench/reproducibility.py [--cases text_to_video,text_to_video_wan,...] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CASES = ["decode", "text_to_video", "text_to_video_wan", "animated_sticker_animatediff", "video_with_sound_tiny",
         "text_to_audio", "video_edit", "talking_portrait"]

CHILD = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    import torch
    case, models, work, threads = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    import kinema
    from kinema.host import graph
    from kinema.host.executor import Executor
    from kinema.nodes import env
    dirs = {k: work / k for k in ("input", "output", "temp")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    folders = env.Folders.of(models, dirs["input"], dirs["output"], dirs["temp"],
                             extra_inputs=[Path(sys.argv[5]) / "workflows" / "assets"])
    tensors = {}
    if case == "decode":
        from kinema.models import vae_tiling
        from kinema.models.families import load_model
        for name, c, f, s in (("fixture-wan-t2v", 16, 5, 8), ("fixture-animatediff", 4, 6, 8)):
            model = load_model(models / "diffusers" / name)
            z = torch.randn(1, c, f, s, s, generator=torch.Generator().manual_seed(3))
            r = model.spatial_ratio
            tensors[f"{name} whole frame"] = model.decode(z)
            tensors[f"{name} 2x2 tiles"] = model.decode(z, vae_tiling.TileSettings(tile_px=s * r // 2, overlap_px=2 * r))
    else:
        ex = Executor(kinema.NODE_CLASS_MAPPINGS, kinema.NODE_DISPLAY_NAME_MAPPINGS, folders=folders)
        ex.previews = False
        prompt, _ = graph.load_workflow(Path(sys.argv[5]) / "workflows" / f"{case}.json", ex.object_info)
        ex.run(prompt)
        with env.using(folders):                  # signatures read input files (IS_CHANGED) through the folders
            sigs = ex._signatures(prompt, graph.execution_order(prompt, ex.object_info))
        for nid, sig in sigs.items():
            for k, v in enumerate(ex.cache[sig][0]):
                v = v.get("samples", v.get("waveform")) if isinstance(v, dict) else v
                if isinstance(v, torch.Tensor) and v.is_floating_point():
                    tensors[f"{prompt[nid]['class_type']}#{nid}.{k}"] = v.detach().float().cpu()
    files = {p.relative_to(dirs["output"]).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted(dirs["output"].rglob("*")) if p.is_file()}
    torch.save(tensors, work / "tensors.pt")
    (work / "files.json").write_text(json.dumps(files))
""")


def run(case: str, models: Path, work: Path, threads: int) -> tuple[dict, dict]:
    import torch
    work.mkdir(parents=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", CHILD, case, str(models), str(work), str(threads), str(REPO)],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{case} at {threads} threads failed:\n{proc.stderr[-3000:]}")
    return torch.load(work / "tensors.pt"), json.loads((work / "files.json").read_text())


def diff(a: dict, b: dict) -> dict[str, float]:
    """max |a - b| per output; IMAGE frames (F, H, W, 3|4) x 255."""
    scale = {k: 255.0 if v.ndim == 4 and v.shape[-1] in (3, 4) else 1.0 for k, v in a.items()}
    return {k: float((a[k] - b[k]).abs().max()) * scale[k] for k in a if k in b and a[k].shape == b[k].shape}


def unit(v) -> str:
    return "/255" if v.ndim == 4 and v.shape[-1] in (3, 4) else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", type=int, default=2, help="the thread count compared with 1")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from kinema.models.fixtures import write_fixtures
        write_fixtures(tmp / "models")
        print(f"{'case':30} {'output (max |diff|)':44} {'1 vs 1':>9} {'1 vs ' + str(args.threads):>9}")
        for case in args.cases.split(","):
            (a, fa), (b, fb), (c, fc) = (run(case, tmp / "models", tmp / f"{case}_{n}", t)
                                         for n, t in enumerate((1, 1, args.threads)))
            same, other = diff(a, b), diff(a, c)
            for k in a:
                u = unit(a[k])
                print(f"{case:30} {k:44} {same.get(k, float('nan')):9.3g} {other.get(k, float('nan')):9.3g} {u}")
            if fa:
                print(f"{case:30} {'files byte-identical':44} {str(fa == fb):>9} {str(fa == fc):>9}", flush=True)


if __name__ == "__main__":
    main()
