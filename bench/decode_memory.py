"""Peak memory and time to decode and write 17, 65 and 257 frames at 128x128 (and with --slow 81 and 321 frames at
832x480): Kinema's streaming tiled decode against diffusers' enable_tiling() + decode-all + write, in one run, with
a VAE at realistic channel counts. Goals (issue 20): time <= 1.1x diffusers' at every length, and peak for the
longest clip <= 1.3x the peak for the shortest of the same size.

The VAE is Wan 2.1's real configuration (AutoencoderKLWan, base_dim 96, z_dim 16, dim_mult 1,2,4,4, 2 res blocks:
127 M parameters) with random weights, or with --vae sd the SD 1.5 VAE of AnimateDiff (AutoencoderKL 128..512).
Each measurement runs in its own process; its peak resident memory comes from os.wait4 (ru_maxrss), and the
child also reports its RSS after building the VAE (the weights), so the working memory is peak - that.
  kinema:    models/vae_tiling.py decode_chunks (automatic plan) -> media.VideoWriter, chunk by chunk (mp4), inside
             spill_to(the video's folder) as decode_to_file does (tile by tile, the clip waits on disk).
  diffusers: vae.enable_tiling(); vae.decode(all latents) -> postprocess to float numpy frames -> uint8 frames ->
             written frame by frame with the same mp4 encoder. (This is what export_to_video does; it needs
             imageio or OpenCV, absent here, so the frames are handed to the same PyAV writer instead.)
Wan frame counts are 4k+1: 17, 65, 257 stand for 16, 64, 256.
Resident memory on glibc includes heap fragmentation (tens to hundreds of MB, varying run to run); with
MALLOC_MMAP_THRESHOLD_=65536 in the environment every large tensor is mmapped and unmapped when freed, so the
peak follows the live tensors: run it both ways to tell the two apart.
Each child also reports its CPU time (all threads) over the decode and write: on a shared machine the wall clock
follows the load, and the children run one after another, so compare CPU times there (one thread: the work done).

Measured 2026-12-03 (2 shared cores, load average 9.4 at the start, 6.0 at the end), OMP_NUM_THREADS=1 --size 64:
  frames  Kinema CPU s  diffusers CPU s  CPU ratio  wall ratio  Kinema peak MB  diffusers peak MB
      17           7.5              7.2      1.04x       1.93x            1121               1107
      65          28.3             27.2      1.04x       1.01x            1114               1128
     257         109.6            105.2      1.04x       0.71x            1123               1115
  plan chunk 1, one tile; time goal met on CPU time (not on the wall clock: load), peak 257 / 17 frames 1.00x.
  --size 128 --frames 17,65 (same hour): 17 frames CPU 30.6 s vs 28.6 s (1.07x), peak 1419 vs 1665 MB;
  65 frames CPU 109.5 s vs 105.8 s (1.04x; wall 0.98x), peak 1447 vs 1716 MB.
  --size 128 --frames 17,257 (16:46-17:09 UTC, load 1.2 -> 2.3, a test suite running beside it): 17 frames CPU
  29.3 s vs 29.7 s (0.99x; wall 0.98x), peak 1362 vs 1380 MB; 257 frames CPU 457.0 s vs 429.1 s (1.07x; wall
  0.92x), peak 1507 vs 1665 MB; peak 257 / 17 frames 1.11x.
  832x480 with the tile-by-tile order (12 tiles of 256x208), one thread per side, the two sides at the same time
  (--only kinema / --only diffusers, --slow-frames 81, 17:51-19:46 UTC): 81 frames Kinema CPU 5890.5 s, peak
  2616 MB (work 1731); diffusers CPU 6026.5 s, peak 3192 MB (work 2307): CPU time 0.98x, peak 0.82x. Kinema at
  5 frames beside them: peak 2199 MB (work 1321); 81 / 5 frames 1.19x. 321 frames not run (hours per side on this
  CPU). See docs/decode.md.
Usage: nice python bench/decode_memory.py [--slow] [--size 128] [--frames 17,65,257] [--vae wan|sd]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

CHILD = textwrap.dedent("""
    import json, sys, time, torch
    mode, vae_kind, frames, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[5]
    width, height = (int(v) for v in sys.argv[4].split("x"))
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2 ** 20
    torch.manual_seed(0)
    if vae_kind == "wan":
        from diffusers import AutoencoderKLWan
        vae = AutoencoderKLWan(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2).eval()
        z = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    else:
        from diffusers import AutoencoderKL
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4).eval()
        z = torch.randn(1, 4, frames, height // 8, width // 8)
    from kinema.models import media, vae_tiling
    base = rss_mb()
    t, cpu = time.perf_counter(), time.process_time()
    if mode == "kinema":
        import os                                        # tile by tile: the clip waits on disk, as in decode_to_file
        with vae_tiling.spill_to(os.path.dirname(out)), media.VideoWriter(out, 16, "mp4") as w:
            for chunk in vae_tiling.decode_chunks(vae, z):                  # (n, H, W, 3) 0..1
                w.write(chunk)
            n, plan = w.frames, vae_tiling.plan(vae, tuple(z.shape[1:]))
        info = (f"chunk {plan.chunk}, tiles {plan.num_tiles(*z.shape[-2:])} of {plan.tile_w * 8}x{plan.tile_h * 8}"
                f"{', tile by tile' if plan.by_tile else ''}")
    else:
        import numpy as np
        from diffusers.video_processor import VideoProcessor
        vae.enable_tiling()
        with torch.no_grad():
            if vae_kind == "wan":
                video = vae.decode(z).sample                         # (1, 3, F, H, W) -1..1
            else:                                                    # per-frame VAE: all frames in one batch
                video = vae.decode(z[0].transpose(0, 1)).sample.transpose(0, 1)[None]
        arr = VideoProcessor().postprocess_video(video, output_type="np")[0]      # (F, H, W, 3) float32
        frames_u8 = [(f * 255).astype(np.uint8) for f in arr]                    # as export_to_video does
        with media.VideoWriter(out, 16, "mp4") as w:
            for f in frames_u8:
                w.write(torch.from_numpy(f).float().div(255)[None])
        n, info = w.frames, "enable_tiling()"
    print(json.dumps({"frames": n, "seconds": time.perf_counter() - t, "cpu": time.process_time() - cpu,
                      "base_mb": base, "info": info}))
""")


def _child(cmd: list[str]) -> tuple[dict, float]:
    """Run one measurement; return (its report, its own peak RSS in MB)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0), err.seek(0)
        if os.waitstatus_to_exitcode(status):
            raise SystemExit(f"{cmd[3:6]} failed:\n{err.read()[-3000:]}")
        return json.loads(out.read().strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128, help="frame side in pixels of the fast rows (a multiple of 8)")
    ap.add_argument("--frames", default="17,65,257", help="frame counts of the fast rows (Wan: 4k+1)")
    ap.add_argument("--slow", action="store_true", help="also 81 and 321 frames at 832x480 (minutes per row)")
    ap.add_argument("--slow-frames", default="81,321", help="frame counts of the 832x480 rows of --slow")
    ap.add_argument("--only", choices=["kinema", "diffusers"], help="measure one side only (rows, no ratios): to "
                    "run the hour-long 480p rows of the two sides apart")
    ap.add_argument("--vae", choices=["wan", "sd"], default="wan")
    args = ap.parse_args()
    groups = {f"{args.size}x{args.size}": [int(c) for c in args.frames.split(",")]}
    if args.slow:
        groups["832x480"] = [int(c) for c in args.slow_frames.split(",")]
    work = tempfile.mkdtemp(prefix="kinema-decode-bench-")
    print(f"{args.vae} VAE (real channel counts, random weights), CPU ({os.cpu_count()} cores, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), mp4 written; peak = child's ru_maxrss, "
          f"work = peak - RSS after building the VAE")
    if os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        print(f"MALLOC_MMAP_THRESHOLD_={os.environ['MALLOC_MMAP_THRESHOLD_']}: peaks follow live tensors, "
              f"not heap fragmentation")
    print(f"{'size':>8} {'frames':>6} {'who':10} {'peak MB':>8} {'work MB':>8} {'seconds':>8} {'cpu s':>8} "
          f"{'s/frame':>8}  plan")
    load = os.getloadavg()[0]
    sides = [args.only] if args.only else ["kinema", "diffusers"]
    results = {size: _measure(args.vae, size, counts, work, sides) for size, counts in groups.items()}
    print(f"load average (1 min) at the start {load:.1f}, at the end {os.getloadavg()[0]:.1f}")
    for size, rows in results.items() if not args.only else ():
        _report(size, groups[size], rows)


def _measure(vae: str, size: str, counts: list[int], work: str, sides: list[str]) -> dict[str, dict[int, dict]]:
    rows: dict[str, dict[int, dict]] = {who: {} for who in sides}
    for n in counts:
        for who in sides:
            t = time.perf_counter()
            rep, peak = _child([sys.executable, "-c", CHILD, who, vae, str(n), size,
                                os.path.join(work, f"{who}_{size}_{n}.mp4")])
            rep.update(peak_mb=peak, work_mb=peak - rep["base_mb"], wall=time.perf_counter() - t)
            rows[who][n] = rep
            print(f"{size:>8} {n:6d} {who:10} {peak:8.0f} {rep['work_mb']:8.0f} {rep['seconds']:8.1f} "
                  f"{rep['cpu']:8.1f} {rep['seconds'] / rep['frames']:8.3f}  {rep['info']}", flush=True)
    return rows


def _report(size: str, counts: list[int], rows: dict[str, dict[int, dict]]) -> None:
    lo, hi = counts[0], counts[-1]
    print(f"\n{size}: ratios (largest / smallest clip):")
    for who in rows:
        a, b = rows[who][lo], rows[who][hi]
        print(f"  {who:10} peak {b['peak_mb'] / a['peak_mb']:.2f}x   work {b['work_mb'] / a['work_mb']:.2f}x   "
              f"time {b['seconds'] / a['seconds']:.1f}x for {hi / lo:.1f}x frames "
              f"(s/frame {a['seconds'] / a['frames']:.3f} -> {b['seconds'] / b['frames']:.3f})")
    worst = worst_cpu = 0.0
    for n in counts:
        k, d = rows["kinema"][n], rows["diffusers"][n]
        worst, worst_cpu = max(worst, k["seconds"] / d["seconds"]), max(worst_cpu, k["cpu"] / d["cpu"])
        print(f"  {n:4d} frames: kinema/diffusers peak {k['peak_mb'] / d['peak_mb']:.2f}x, work "
              f"{k['work_mb'] / d['work_mb']:.2f}x, time {k['seconds'] / d['seconds']:.2f}x, "
              f"CPU time {k['cpu'] / d['cpu']:.2f}x")
    w, h = (int(v) for v in size.split("x"))
    slope = {who: (rows[who][hi]["work_mb"] - rows[who][lo]["work_mb"]) / (hi - lo) for who in rows}
    print(f"  working memory growth per frame: kinema {slope['kinema'] * 1024:.1f} KB, diffusers "
          f"{slope['diffusers'] * 1024:.1f} KB ({slope['diffusers'] * 2 ** 20 / (w * h):.1f} bytes per pixel)")
    flat = rows["kinema"][hi]["peak_mb"] / rows["kinema"][lo]["peak_mb"]
    print(f"  goal: time <= 1.1x diffusers at every length: worst {worst:.2f}x {'met' if worst <= 1.1 else 'NOT met'}"
          f" (wall clock); CPU time worst {worst_cpu:.2f}x {'met' if worst_cpu <= 1.1 else 'NOT met'}")
    print(f"  goal: kinema peak for {hi} frames <= 1.3x its peak for {lo}: {flat:.2f}x "
          f"{'met' if flat <= 1.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
