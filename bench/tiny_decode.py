"""Tiny decoder (TAEHV layout, models/taehv.py) against the full Wan 2.1 VAE: decode time, peak memory, frame count and
size, in one run (goal, issue 20: the tiny decoder >= 10x faster at 480p).

Both at their real channel counts with random weights: the Wan 2.1 VAE (AutoencoderKLWan, base_dim 96, 127 M
parameters) through Kinema's streaming decode (models/vae_tiling.py, automatic plan), and a taew2_1-layout tiny
decoder (widths 256/128/64/64, 16 latent channels, 9.8 M parameters) through TinyVideoDecoder.decode_chunks. Each in
its own process (peak = ru_maxrss; work = peak - RSS after building the model), the same latents, CPU.
Usage: nice python bench/tiny_decode.py [--frames 9] [--size 832x480] [--tiny-only] [--bf16]

Measured 2026-12-03 (OMP_NUM_THREADS=1 nice python bench/tiny_decode.py --bf16; CPU shared by six agents, load
average ~9 on 2 cores: noisy):

    Wan 2.1 VAE vs taew2_1-layout tiny decoder, 9 frames at 832x480, random weights, CPU (2 cores, OMP_NUM_THREADS=1)
    who        params frames      size  peak MB  work MB  seconds  plan
    tiny         9.8M      9   832x480     1082      795     77.2  taew2_1, chunk 1
    tiny-bf16    9.8M      9   832x480     1040      440    106.6  bf16 vs fp32: max 0.029, mean 0.0023; taew2_1, chunk 1
    wan-vae    126.9M      9   832x480    11112    10226   1826.7  chunk 1, tiles 170

    tiny decoder: 23.7x faster (met: goal >= 10x), working memory 795 MB vs 10226 MB (0.08x), frames and size identical (9 x [480, 832])

Later, --tiny-only with the final code: 9 frames 52.5 s (819 MB work), 33 frames 170.0 s (856 MB), 81 frames
384.0 s (821 MB). Before this change the tiny row was 204.5 s, 2722 MB (7.7x).

Again 17:23 UTC with the final code and the VAE's new plan (18 tiles of 192 px), OMP_NUM_THREADS=2, quiet machine:
    tiny 9.0 s (801 MB work), wan-vae 355.8 s (7295 MB work, chunk 1, tiles 18): 39.6x faster, 0.11x the memory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from decode_memory import _child  # noqa: E402  (one measured child process, as the decode bench runs it)

CHILD = textwrap.dedent("""
    import json, sys, time, torch
    who, frames = sys.argv[1], int(sys.argv[2])
    width, height = (int(v) for v in sys.argv[3].split("x"))
    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2 ** 20
    torch.manual_seed(0)
    z = torch.randn(1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
    if who == "wan-vae":
        from diffusers import AutoencoderKLWan
        from kinema.models import vae_tiling
        model = AutoencoderKLWan(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2).eval()
        run = lambda: vae_tiling.decode_chunks(model, z)
        plan = vae_tiling.plan(model, tuple(z.shape[1:]))
        info = f"chunk {plan.chunk}, tiles {plan.num_tiles(*z.shape[-2:])}"
    else:
        from kinema.models import taehv
        model = taehv.TinyVideoDecoder(taehv.TinySpec(16, 1, (256, 128, 64, 64), (1, 2, 2))).eval()
        with torch.no_grad():                           # activations of a trained decoder's scale, frames vary
            for p in model.parameters():
                p.normal_(0, p[0].numel() ** -0.5 if p.ndim == 4 else 0.02)
        if who == "tiny-bf16":
            with torch.no_grad():                       # its frames against float32 on the first latent frames
                ref = model.decode(z[:, :, :2])
                model.to(torch.bfloat16)
                diff = (model.decode(z[:, :, :2]) - ref).abs()
            info = f"bf16 vs fp32: max {diff.max():.3f}, mean {diff.mean():.4f}; "
        else:
            info = ""
        run = lambda: model.decode_chunks(z)
        info += f"{model.spec.name}, chunk {model.chunk_frames(*z.shape[-2:])}"
    params = sum(p.numel() for p in model.parameters())
    base = rss_mb()
    t = time.perf_counter()
    n, size = 0, None
    with torch.no_grad():
        for chunk in run():                                                  # (n, H, W, 3) 0..1
            n, size = n + chunk.shape[0], tuple(chunk.shape[1:3])
    print(json.dumps({"frames": n, "size": size, "seconds": time.perf_counter() - t, "base_mb": base,
                      "params": params, "info": info}))
""")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=9, help="frames (4k+1)")
    ap.add_argument("--size", default="832x480", help="WIDTHxHEIGHT, multiples of 8")
    ap.add_argument("--tiny-only", action="store_true", help="no Wan VAE row (it takes ~3 min per frame at 480p)")
    ap.add_argument("--bf16", action="store_true", help="also the tiny decoder in bfloat16 (not what Kinema runs)")
    args = ap.parse_args()
    print(f"Wan 2.1 VAE vs taew2_1-layout tiny decoder, {args.frames} frames at {args.size}, random weights, CPU "
          f"({os.cpu_count()} cores, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})")
    print(f"{'who':9} {'params':>7} {'frames':>6} {'size':>9} {'peak MB':>8} {'work MB':>8} {'seconds':>8}  plan")
    rows = {}
    for who in ("tiny",) + ("tiny-bf16",) * args.bf16 + ("wan-vae",) * (not args.tiny_only):
        t = time.perf_counter()
        rep, peak = _child([sys.executable, "-c", CHILD, who, str(args.frames), args.size])
        rep.update(peak_mb=peak, work_mb=peak - rep["base_mb"], wall=time.perf_counter() - t)
        rows[who] = rep
        w, h = rep["size"][1], rep["size"][0]
        print(f"{who:9} {rep['params'] / 1e6:6.1f}M {rep['frames']:6d} {f'{w}x{h}':>9} {peak:8.0f} "
              f"{rep['work_mb']:8.0f} {rep['seconds']:8.1f}  {rep['info']}", flush=True)
    if args.tiny_only:
        return
    tiny, full = rows["tiny"], rows["wan-vae"]
    speed = full["seconds"] / tiny["seconds"]
    same = tiny["frames"] == full["frames"] == args.frames and tiny["size"] == full["size"]
    print(f"\ntiny decoder: {speed:.1f}x faster ({'met' if speed >= 10 else 'NOT met'}: goal >= 10x), working memory "
          f"{tiny['work_mb']:.0f} MB vs {full['work_mb']:.0f} MB ({tiny['work_mb'] / full['work_mb']:.2f}x), "
          f"frames and size {'identical' if same else 'DIFFERENT'} ({tiny['frames']} x {tiny['size']})")


if __name__ == "__main__":
    main()
