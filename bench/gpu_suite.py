"""The GPU suite of issues 16 and 20, one script, meant to fit in about 10 minutes on a datacenter GPU (never run on one
yet: the decode section alone may take a few); every ratio measured in this run.

Full-size architectures with random weights (prompts as random embeddings; no text encoder):
1. wan_loop:    Wan 2.1 T2V 1.3B, 832x480, 81 frames, cfg 5: seconds per step of Kinema's loop against diffusers'
                WanPipeline on the same modules, same seed (and the largest latent difference between the two).
2. wan_memory:  peak VRAM (torch.cuda.max_memory_allocated) and s/step of Kinema's loop with the denoiser plain
                (bf16), fp8 storage (layerwise casting) and block offload (group offloading, streamed), each
                beside models/memory.py's estimate for it.
3. step_cache:  calibration run, then a cached run (threshold 0.1): denoiser calls and wall-clock speedup.
4. attention:   the backends available here (models/model_options.available_attention) and one Wan denoiser call
                with each.
5. animatediff: SD 1.5 + motion module v2 at 512x512, 8 frames, 4 steps, cfg 1 (few-step LoRA settings): seconds
                for sampling + decode (the animated-sticker claim: under 1 s on a datacenter GPU).
6. ltx2:        LTX-2 19B (all 48 layers, bf16, configs of models/files/configs/ltx2_19b.json) text-to-video WITH
                audio at 768x512, 121 frames, cfg 3: s/step of Kinema's loop (models/joint.sample_clip through the
                family) against diffusers' LTX2Pipeline on the same modules (3 steps: the first dropped), and the
                latent upsampler (2x spatial) on those latents: Kinema's LTX2LatentUpsampler against
                LTX2LatentUpsamplePipeline (seconds, and the largest difference).
7. decode:      Wan 2.1 VAE decode of 17, 65, 257 frames at 128x128 and 81, 321 frames at 832x480 (issue 20):
                Kinema's tiled decode (automatic; at 480p also on a 4 GB budget) against diffusers' enable_tiling()
                decode-all: seconds, peak VRAM, plan.

    .venv/bin/python bench/gpu_suite.py [--out suite.json] [--only decode ...]
    .venv/bin/python bench/gpu_suite.py --dry-run    # every section at fixture size on the CPU (tests run this)
A failing section is reported and the others still run; the exit status is 1 when any failed."""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import realsize as R  # noqa: E402


@dataclass
class Setup:
    tiny: bool
    device: str
    dtype: torch.dtype
    frames: int
    height: int
    width: int
    steps: int
    cache_steps: int
    offload_blocks: int

    @classmethod
    def of(cls, dry: bool) -> "Setup":
        if dry:
            return cls(True, "cpu", torch.float32, 5, 32, 32, 3, 8, 1)
        return cls(False, "cuda", torch.bfloat16, 81, 480, 832, 4, 20, 4)

    def settings(self, steps: int | None = None, **kw):
        from kinema.models.sampling import SamplerSettings
        return SamplerSettings(num_frames=self.frames, height=self.height, width=self.width,
                               num_inference_steps=steps or self.steps, guidance_scale=5.0, seed=0, **kw)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def per_step(stamps: list[float]) -> float:
    """Mean seconds per step from the times at the end of each step, leaving out the first (warm-up) step."""
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return sum(gaps) / len(gaps) if gaps else float("nan")


def kinema_run(model, pos, neg, settings, predict=None) -> tuple[torch.Tensor, float, float]:
    """(latents, s/step, peak bytes on CUDA or 0) of one run of Kinema's loop."""
    from kinema.models.sampling import sample
    dev = str(model.device)
    stamps: list[float] = []

    def on_step(i, total, latents):
        sync(dev)
        stamps.append(time.perf_counter())

    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    out = sample(model, pos, neg, settings, on_step=on_step, predict=predict)
    peak = torch.cuda.max_memory_allocated() if dev.startswith("cuda") else 0
    return out, per_step(stamps), peak


def wan_loop(s: Setup, ctx: dict) -> dict:
    pipe = R.wan_pipeline(s.tiny, s.device, s.dtype)
    model = R.wan_family(pipe, s.device, s.dtype)
    pe, ne = (R.prompt_embeds("wan", s.tiny, s.device, s.dtype, seed) for seed in (0, 1))
    pos, neg = R.conditioning("wan", pe), R.conditioning("wan", ne)
    ctx.update(pipe=pipe, model=model, pos=pos, neg=neg)
    ours, ours_step, _ = kinema_run(model, pos, neg, s.settings())
    stamps: list[float] = []

    def on_end(p, i, t, kwargs):
        sync(s.device)
        stamps.append(time.perf_counter())
        return kwargs

    with torch.no_grad():
        theirs = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, num_frames=s.frames, height=s.height,
                      width=s.width, num_inference_steps=s.steps, guidance_scale=5.0, output_type="latent",
                      generator=torch.Generator("cpu").manual_seed(0), callback_on_step_end=on_end).frames
    return {"kinema_s_per_step": ours_step, "diffusers_s_per_step": per_step(stamps),
            "ratio": ours_step / per_step(stamps), "max_latent_diff": float((ours - theirs.float()).abs().max())}


def _memory_row(s: Setup, model, pos, neg) -> dict:
    from kinema.models import memory
    shape = model.latent_shape(s.settings())
    est = memory.estimate(memory.profile(model), shape[1], shape[2], shape[3], True, str(model.device))
    _, step, peak = kinema_run(model, pos, neg, s.settings(steps=2 if not s.tiny else 3))
    return {"peak_gb": peak / memory.GB if peak else None, "estimate_gb": est.total / memory.GB, "s_per_step": step}


def wan_memory(s: Setup, ctx: dict) -> dict:
    from kinema.models.model_options import ModelOptions, apply_options
    model, pos, neg = ctx["model"], ctx["pos"], ctx["neg"]
    rows = {"plain": _memory_row(s, model, pos, neg)}
    ctx["plain_done"] = True
    step_cache(s, ctx, into=rows)                         # on the plain model, before it is cast to fp8
    attention(s, ctx, into=rows)
    apply_options(model, ModelOptions(weights="fp8_e4m3fn"))
    gc.collect()
    rows["fp8"] = _memory_row(s, model, pos, neg)
    ctx.pop("model"), ctx.pop("pipe")
    del model
    gc.collect()
    if s.device.startswith("cuda"):
        torch.cuda.empty_cache()
    pipe = R.wan_pipeline(s.tiny, s.device, s.dtype, transformer_device="cpu")   # weights start in CPU memory
    fresh = R.wan_family(pipe, s.device, s.dtype)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notes = apply_options(fresh, ModelOptions(offload_blocks=s.offload_blocks))
    rows[f"offload_{s.offload_blocks}"] = {**_memory_row(s, fresh, pos, neg), "note": notes[0],
                                           "warnings": [str(w.message) for w in caught]}
    return rows


def step_cache(s: Setup, ctx: dict, into: dict) -> None:
    from kinema.models.step_cache import StepCache, session
    model, pos, neg = ctx["model"], ctx["pos"], ctx["neg"]
    settings = s.settings(steps=s.cache_steps)
    cache = StepCache(threshold=0.1, max_skips=3, store=Path(model.path))
    times = []
    for _ in range(2):                                    # calibration (full), then cached
        with session(cache, model, settings) as predict:
            start = time.perf_counter()
            kinema_run(model, pos, neg, settings, predict)
            times.append(time.perf_counter() - start)
        stats = predict.stats
    into["step_cache"] = {"steps": s.cache_steps, "calls": stats.calls, "skipped": stats.skipped,
                          "fewer_calls": stats.saving, "speedup": times[0] / times[1]}


def attention(s: Setup, ctx: dict, into: dict) -> None:
    from kinema.models.model_options import available_attention
    model, pos, neg = ctx["model"], ctx["pos"], ctx["neg"]
    from kinema.models.sampling import model_input  # noqa: F401  (the loop's own input layout)
    shape = (2, *model.latent_shape(s.settings()))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(s.device, s.dtype)
    batch = {"encoder_hidden_states": torch.cat([neg.embeds, pos.embeds])}
    t = torch.tensor(500.0, device=s.device)
    rows = {}
    for backend in available_attention():
        try:
            model.transformer.set_attention_backend(backend)
            with torch.no_grad():
                model.predict(x, t, batch)                # warm-up
                sync(s.device)
                start = time.perf_counter()
                model.predict(x, t, batch)
                sync(s.device)
            rows[backend] = time.perf_counter() - start
        except Exception as exc:                          # noqa: BLE001 (a backend that fails here is reported)
            rows[backend] = f"error: {exc}"
    model.transformer.set_attention_backend("native")
    into["attention_s_per_call"] = rows


def animatediff(s: Setup, ctx: dict) -> dict:
    from kinema.models.sampling import SamplerSettings, sample
    size = 64 if s.tiny else 512
    model = R.animatediff_family(s.tiny, s.device, torch.float32 if s.tiny else torch.float16)
    pos = R.conditioning("animatediff", R.prompt_embeds("animatediff", s.tiny, s.device, model.dtype, 0))
    settings = SamplerSettings(num_frames=8, height=size, width=size, num_inference_steps=4, guidance_scale=1.0,
                               seed=0)
    times = []
    for _ in range(2):                                    # the first run warms the kernels up
        sync(s.device)
        start = time.perf_counter()
        frames = model.decode(sample(model, pos, None, settings))
        sync(s.device)
        times.append(time.perf_counter() - start)
    return {"seconds": times[1], "first_run_seconds": times[0], "frames": list(frames.shape)}


DECODE_ROWS = {False: [(128, 128, 17), (128, 128, 65), (128, 128, 257), (832, 480, 81), (832, 480, 321)],
               True: [(32, 32, 5), (32, 32, 9), (160, 96, 9)]}
LEAN_MB = 4096                 # the lean Kinema run of the 480p rows: a 4 GB budget (tile by tile on a large clip)


def decode(s: Setup, ctx: dict) -> dict:
    """Wan 2.1 VAE (real channel counts, random weights, fp32 as WanPipeline loads it) decode of latents to uint8
    frames: Kinema's decode_chunks (automatic plan on the free memory, and at 480p also a LEAN_MB budget) against
    diffusers' enable_tiling() + decode-all: seconds, peak VRAM, and the largest pixel difference (the tiles differ
    from diffusers', so that is the tiling bound, not an identity)."""
    from diffusers import AutoencoderKLWan
    from kinema.models import vae_tiling
    cfg = dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1) if s.tiny else {}
    vae = R.random_module(AutoencoderKLWan, cfg, s.device, torch.float32, seed=1).eval()
    rows = {}
    warm = torch.randn(1, 16, 2, 4, 4, device=s.device)
    _decode_u8(vae, warm, "kinema", None), _decode_u8(vae, warm, "diffusers", None)      # kernels warmed up
    for w, h, n in DECODE_ROWS[s.tiny]:
        z = torch.randn(1, 16, (n - 1) // 4 + 1, h // 8, w // 8, generator=torch.Generator().manual_seed(n))
        z = z.to(s.device)
        runs = {"kinema": None, "diffusers": None}
        if w * h >= 832 * 480 or s.tiny:
            runs["kinema_lean"] = vae_tiling.TileSettings(memory_mb=LEAN_MB if not s.tiny else 1)
        row, frames = {}, {}
        for who, settings in runs.items():
            _free({}, s.device)
            if s.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")              # a tiny budget: short of memory on purpose
                out, secs = _timed(s.device, lambda: _decode_u8(vae, z, who, settings))
            peak = torch.cuda.max_memory_allocated() / 2 ** 30 if s.device.startswith("cuda") else 0.0
            frames[who] = out
            row[who] = {"seconds": secs, "peak_gb": peak}
            if who != "diffusers":
                tp = vae_tiling.plan(vae, tuple(z.shape[1:]), settings)
                row[who]["plan"] = f"{tp.num_tiles(*z.shape[-2:])} tiles {tp.tile_w * 8}x{tp.tile_h * 8}, " \
                                   f"chunk {tp.chunk}{', by tile' if tp.by_tile else ''}"
        row["frames"] = list(frames["kinema"].shape)
        row["time_ratio"] = row["kinema"]["seconds"] / row["diffusers"]["seconds"]
        row["max_diff_u8"] = int((frames["kinema"].int() - frames["diffusers"].int()).abs().max())
        rows[f"{w}x{h}x{n}"] = row
    return rows


def _decode_u8(vae, z: torch.Tensor, who: str, settings) -> torch.Tensor:
    """(F, H, W, 3) uint8 frames on the CPU, as a writer gets them."""
    from kinema.models import vae_tiling
    if who == "diffusers":
        vae.enable_tiling()
        try:
            with torch.no_grad():
                video = vae.decode(z).sample                                            # (1, 3, F, H, W)
        finally:
            vae.disable_tiling()
        return ((video[0].permute(1, 2, 3, 0) / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return torch.cat([(c * 255).round().to(torch.uint8) for c in vae_tiling.decode_chunks(vae, z, settings)])


def _free(ctx: dict, device: str) -> None:
    ctx.clear()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _timed(device: str, fn) -> tuple[object, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def ltx2(s: Setup, ctx: dict) -> dict:
    from fractions import Fraction
    from diffusers import LTX2Pipeline
    from kinema.models.families.base import Conditioning
    from kinema.models.joint import sample_clip
    from kinema.models.sampling import SamplerSettings
    _free(ctx, s.device)                                  # the Wan models go before the 19B one comes
    frames, height, width, steps = (9, 64, 64, 3) if s.tiny else (121, 512, 768, 3)
    pipe = R.ltx2_pipeline(s.tiny, s.device, s.dtype)
    model = R.ltx2_family(pipe, s.device, s.dtype)
    embeds = [R.ltx2_prompt_embeds(pipe, 32 if s.tiny else 1024, s.device, s.dtype, seed) for seed in (0, 1)]
    mask = torch.ones(1, embeds[0].shape[1], dtype=torch.long, device=s.device)
    pos, neg = (Conditioning("ltx2", p, e, mask=mask) for p, e in zip(("a", "b"), embeds))
    settings = SamplerSettings(num_frames=frames, height=height, width=width, num_inference_steps=steps,
                               guidance_scale=3.0, seed=0, frame_rate=Fraction(24))
    layout = model.layout(settings)
    ours: list[float] = []

    def on_step(*_):
        sync(s.device)
        ours.append(time.perf_counter())
    with torch.no_grad():
        clip = sample_clip(model, pos, neg, settings, on_step=on_step)
    reference = LTX2Pipeline(**{k: getattr(pipe, k) for k in R.LTX2_PARTS})
    reference.set_progress_bar_config(disable=True)
    theirs: list[float] = []

    def on_end(p, i, t, kwargs):
        sync(s.device)
        theirs.append(time.perf_counter())
        return kwargs
    audio = torch.zeros(1, pipe.audio_vae.config.latent_channels, layout.audio_steps, model.latent_mel_bins,
                        device=s.device, dtype=s.dtype)
    with torch.no_grad():
        reference(prompt_embeds=embeds[0], prompt_attention_mask=mask, negative_prompt_embeds=embeds[1],
                  negative_prompt_attention_mask=mask, height=height, width=width, num_frames=frames,
                  frame_rate=24.0, num_inference_steps=steps, guidance_scale=3.0, audio_guidance_scale=3.0,
                  stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0,
                  guidance_rescale=0.0, audio_guidance_rescale=0.0, spatio_temporal_guidance_blocks=None,
                  noise_scale=1.0, audio_latents=audio, generator=torch.Generator("cpu").manual_seed(0),
                  output_type="latent", callback_on_step_end=on_end)
    row = {"size": f"{frames} frames {width}x{height}", "latent": list(clip.video.shape),
           "audio_latent": list(clip.audio_latents.shape), "steps_timed": steps - 1,
           "layers": pipe.transformer.config.num_layers, "kinema_s_per_step": per_step(ours),
           "diffusers_s_per_step": per_step(theirs), "ratio": per_step(ours) / per_step(theirs)}
    del reference
    row["upsampler"] = _ltx2_upsample(s, pipe, model, clip.video)
    return row


def _ltx2_upsample(s: Setup, pipe, model, latents: torch.Tensor) -> dict:
    """Kinema's LTX2LatentUpsampler.upsample (Latent Upscale's first half) vs LTX2LatentUpsamplePipeline, seconds
    (after one warm-up call each) and the largest difference of the normalised results."""
    from diffusers import LTX2LatentUpsamplePipeline
    up = R.ltx2_upsampler(s.tiny, pipe, s.device, s.dtype)
    reference = LTX2LatentUpsamplePipeline(vae=up.vae, latent_upsampler=up.net)
    vae = model.vae
    raw = model.pipe._denormalize_latents(latents.to(s.device, torch.float32), vae.latents_mean, vae.latents_std,
                                          vae.config.scaling_factor)

    def theirs():
        with torch.no_grad():
            out = reference(latents=raw.to(up.net.dtype), output_type="latent", return_dict=False)[0]
        return model.pipe._normalize_latents(out.float(), vae.latents_mean, vae.latents_std,
                                             vae.config.scaling_factor)
    times = {}
    for name, fn in (("kinema", lambda: up.upsample(model, latents)), ("diffusers", theirs)):
        _timed(s.device, fn)                              # warm-up
        times[name] = _timed(s.device, fn)
    (big, k), (ref, d) = times["kinema"], times["diffusers"]
    return {"latent_out": list(big.shape), "kinema_s": k, "diffusers_s": d,
            "max_diff": float((big - ref.to(big.device)).abs().max())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="every section at fixture size on the CPU")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--only", nargs="+", metavar="SECTION", help="run these sections only (wan_loop, wan_memory, "
                   "animatediff, ltx2, decode)")
    args = p.parse_args(argv)
    s = Setup.of(args.dry_run)
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA GPU here: run with --dry-run, or on a GPU machine")
        return 2
    from kinema.models.model_options import available_attention
    report = {"device": torch.cuda.get_device_name() if s.device == "cuda" else "cpu (dry run)",
              "size": f"{s.frames} frames {s.width}x{s.height}", "attention_available": available_attention()}
    ctx: dict = {}
    failed = []
    start = time.perf_counter()
    for name, section in (("wan_loop", wan_loop), ("wan_memory", wan_memory), ("animatediff", animatediff),
                          ("ltx2", ltx2), ("decode", decode)):
        if args.only and name not in args.only:
            continue
        t0 = time.perf_counter()
        try:
            report[name] = section(s, ctx)
        except Exception as exc:                          # noqa: BLE001 (one section failing keeps the others)
            failed.append(name)
            report[name] = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        report[name + "_wall_s"] = time.perf_counter() - t0
        print(f"{name}: {json.dumps(report[name], default=str)}", flush=True)
    report["total_s"] = time.perf_counter() - start
    report["failed"] = failed
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"total {report['total_s']:.1f} s; failed: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
