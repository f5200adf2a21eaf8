"""CPU, real size: Wan 2.1 T2V 1.3B (full-size transformer, random bf16 weights) at 17 frames, 160x160, cfg 5.

Prints, all measured in this run:
- seconds per step of Kinema's loop (models/sampling.sample through the Wan family) against diffusers' WanPipeline
  on the same modules, same seed and settings; runs interleaved (K D K D), each the minimum over rounds (the
  machine is shared: the minimum is the run least disturbed), and the largest latent difference between the two;
- peak RSS while sampling with the denoiser stored bf16, fp8 by Model Options (loaded bf16, then
  model_options.apply_options) and fp8 by the files loader's weight_dtype ("fp8-file"), each in a fresh process
  loading the same random bf16 .safetensors file (diffusers key layout, written first into a temporary folder)
  through models/files.load_denoiser, the product's path; the peak is reset after loading, so it is the sampling's
  peak (weights + activations + everything else the process holds); the loading peak is printed too. The VAE is at
  fixture size (neither loop decodes) and there is no text encoder (random prompt embeddings): the denoiser is
  what the ratio is about.

    OMP_NUM_THREADS=2 .venv/bin/python bench/wan_speed.py [--steps 2] [--rounds 2] [--memory-only]
Needs about 3.5 GB of RAM and 2.9 GB of temporary disk; about 20 minutes on 2 busy shared cores (--memory-only
--steps 1 with OMP_NUM_THREADS=1: about 12).

Measured once, 2026-12-03 13:45 UTC, 2 threads on a 2-core machine shared with other jobs (load 3-7):
    s/step Kinema 72.3, 64.9 / WanPipeline 97.9, 50.4 (rounds K D K D): min ratio 1.287 (goal <= 1.02 not shown:
    the rounds vary 2x with the other jobs; a 3-block full-width check right after timed one batch-2 call (Kinema's
    CFG) at 3.95-4.38 s against two batch-1 calls (WanPipeline's CFG) at 4.70-5.93 s). Max latent diff 3.8e-2 (bf16).
    Memory then (random weights built in the process, diffusers' layerwise casting): bf16 3.25 GB, fp8 2.45 GB,
    ratio 0.753. What the extra was (/proc/self/smaps_rollup, malloc_trim before/after): after the cast 0.86 GB
    of C heap the bf16 weights left (RSS 2.61 -> 1.75 GB on malloc_trim), and while sampling +0.68 GB more heap,
    all of it given back by malloc_trim after (2.45 -> 1.77 GB): layerwise casting re-allocates every layer's
    weights twice a call (fp8 -> bf16 before, bf16 -> fp8 after), and glibc, its mmap threshold raised to 32 MB by
    earlier frees, serves and keeps those 2-28 MB blocks in the heap (MALLOC_MMAP_THRESHOLD_=131072: sampling
    peak 1.84 GB instead of 2.45).
Fixed in the product (models/model_options._fp8, models/heap.py): Linear weights quantised to fp8 one layer at a
time into StoredLinear (stored weights never re-allocated; one upcast temporary per call), the heap trimmed after
the cast, and on the CPU big allocations memory-mapped (freed upcasts leave at once).
Measured 2026-12-03 16:10 UTC, --memory-only --steps 1, 1 thread, machine shared (load 5-9):
    peak sampling RSS bf16 3.22 GB, fp8 (Model Options) 1.92 GB: ratio 0.595; fp8-file (weight_dtype) 1.91 GB:
    ratio 0.592 (goal <= 0.6 met by both, with little margin). Denoiser weights 2.65 -> 1.35 GB (0.51x); what is
    left (~0.41 GB before sampling, +0.16 GB activations while sampling) is the same in all three. Loading peak
    bf16 3.06 GB, fp8 (Model Options) 3.35 GB (the bf16 load, then the cast), fp8-file 2.56 GB (tensor by tensor;
    1.78-2.56 GB over five loads: heap the per-tensor float32 temporaries leave, given back after the load by the
    trim in models/files.load_denoiser: RSS 1.73 GB). s/step bf16 49.1, fp8 67.9, fp8-file 39.4 (one round each,
    too noisy to compare)."""
from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realsize as R  # noqa: E402

FRAMES, SIZE = 17, 160
PARTS = ("bf16", "fp8", "fp8-file")


def _hwm_reset() -> None:
    """Return freed heap memory to the system and reset the peak RSS (VmHWM) to the current RSS."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _settings(steps: int):
    from kinema.models.sampling import SamplerSettings
    return SamplerSettings(num_frames=FRAMES, height=SIZE, width=SIZE, num_inference_steps=steps, guidance_scale=5.0,
                           seed=0)


def _load(storage: str, file: Path, tiny: bool):
    """The product's path: the denoiser from its file (models/files.load_denoiser, what Load Video Model (Files)
    runs), stored bf16, or fp8 by the files loader's weight_dtype ("fp8-file"), or loaded bf16 and then stored fp8
    by Model Options ("fp8": models/model_options.apply_options, what the loaders run after loading)."""
    from kinema.models.files import load_denoiser
    from kinema.models.model_options import ModelOptions, apply_options
    fp8 = torch.float8_e4m3fn if storage == "fp8-file" else None
    transformer = load_denoiser(file, torch.bfloat16, "cpu", strict=not tiny, storage=fp8, heads=2 if tiny else None)
    model = R.wan_family(R.wan_pipeline(tiny, "cpu", torch.bfloat16, tiny_vae=True, transformer=transformer), "cpu",
                         torch.bfloat16)
    if storage == "fp8":
        apply_options(model, ModelOptions(weights="fp8_e4m3fn"))
    return model


def part(storage: str, steps: int, rounds: int, file: Path, tiny: bool = False) -> dict:
    """One process: load (and store), reset the peak, sample; bf16 also times WanPipeline against Kinema."""
    from kinema.models.sampling import sample
    model = _load(storage, file, tiny)
    pipe = model.pipe
    load_peak = _status("VmHWM")
    pe, ne = (R.prompt_embeds("wan", tiny, "cpu", torch.bfloat16, seed) for seed in (0, 1))
    pos, neg = R.conditioning("wan", pe), R.conditioning("wan", ne)
    weights = sum(t.numel() * t.element_size() for t in model.transformer.state_dict().values())
    _hwm_reset()
    base_rss = _status("VmRSS")
    out = {"storage": storage, "denoiser_weight_bytes": weights, "load_peak_rss": load_peak,
           "rss_before_sampling": base_rss}
    kin, dif = [], []
    for _ in range(max(rounds, 1) if storage == "bf16" else 1):
        start = time.perf_counter()
        ours = sample(model, pos, neg, _settings(steps))
        kin.append((time.perf_counter() - start) / steps)
        if storage != "bf16" or not rounds:
            continue
        start = time.perf_counter()
        with torch.no_grad():
            theirs = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, num_frames=FRAMES, height=SIZE, width=SIZE,
                          num_inference_steps=steps, guidance_scale=5.0, output_type="latent",
                          generator=torch.Generator("cpu").manual_seed(0)).frames
        dif.append((time.perf_counter() - start) / steps)
        out["max_latent_diff"] = float((ours - theirs.float()).abs().max())
    out.update(peak_rss=_status("VmHWM"), kinema_s_per_step=min(kin), kinema_rounds=kin)
    if dif:
        out.update(diffusers_s_per_step=min(dif), diffusers_rounds=dif)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="the same at fixture size (a quick check of the script)")
    p.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    p.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--memory-only", action="store_true", help="no WanPipeline timing (rounds of the bf16 part)")
    args = p.parse_args(argv)
    rounds = 0 if args.memory_only else args.rounds
    if args.part:
        print(json.dumps(part(args.part, args.steps, rounds, args.file, args.tiny)))
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="kinema-bench-") as tmp:
        file = Path(tmp) / "wan2.1_t2v_1.3B_random_bf16.safetensors"
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
                        f"import realsize; realsize.write_wan_file({args.tiny}, {str(file)!r})"], check=True)
        for storage in PARTS:
            proc = subprocess.run([sys.executable, __file__, "--part", storage, "--steps", str(args.steps),
                                   "--rounds", str(rounds), "--file", str(file)] + ["--tiny"] * args.tiny,
                                  capture_output=True, text=True, check=True)
            results[storage] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(storage, results[storage], flush=True)
    b, gb = results["bf16"], 1024 ** 3
    print(f"\nWan 2.1 1.3B (random bf16 weights), {FRAMES} frames {SIZE}x{SIZE}, cfg 5, {args.steps} steps, "
          f"{torch.get_num_threads()} threads")
    if "diffusers_s_per_step" in b:
        print(f"s/step: Kinema {b['kinema_s_per_step']:.2f}, WanPipeline {b['diffusers_s_per_step']:.2f}: ratio "
              f"{b['kinema_s_per_step'] / b['diffusers_s_per_step']:.3f} (goal <= 1.02); max latent diff "
              f"{b['max_latent_diff']:.2e}")
    for name in PARTS[1:]:
        f = results[name]
        print(f"peak RSS sampling: bf16 {b['peak_rss'] / gb:.2f} GB, {name} {f['peak_rss'] / gb:.2f} GB: ratio "
              f"{f['peak_rss'] / b['peak_rss']:.3f} (goal <= 0.6); loading {b['load_peak_rss'] / gb:.2f} -> "
              f"{f['load_peak_rss'] / gb:.2f} GB; denoiser weights {b['denoiser_weight_bytes'] / gb:.2f} -> "
              f"{f['denoiser_weight_bytes'] / gb:.2f} GB; s/step {f['kinema_s_per_step']:.2f}")


if __name__ == "__main__":
    main()
