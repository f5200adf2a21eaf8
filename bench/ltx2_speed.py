"""Seconds per step: Kinema's LTX-2 video family (picture + sound in one pass of Kinema's loop) against diffusers'
LTX2Pipeline, in one run, on the same random-weight model, same prompt embeddings, size, seed and sigmas.

The model is LTX-2 at its FULL WIDTH (the transformer's default config: 32 heads x 128 video, 32 x 64 audio,
128 latent channels each, caption width 3840) but with FEWER LAYERS (--layers, default 1 of LTX-2's 48): the full
model does not fit this 24 GB CPU machine in fp32, and every layer costs the same in both loops, so the ratio is
what the loop adds around the denoiser. No Gemma (both take the same precomputed prompt embeddings of two
stacked layers through a 1-layer full-width connector stack); a small VAE with LTX-2's 32x / 8x compression and
128 channels (it only sizes the latents: nothing is decoded). Guidance on (cfg 3: two rows a call), STG and
modality guidance off in the pipeline (Kinema does not run them). After one untimed warm-up run each, each side
runs --runs times, alternating which goes first; the first step of each run is dropped (it includes the run's
setup); the figure is the median of the rest. Peak RSS is reported.

Measured 2026-12-03 13:45 UTC (shared 2-core CPU, 2 threads, defaults): Kinema 9.68 s/step, LTX2Pipeline 10.21
s/step, ratio 0.95 (within the machine's noise: the loop adds nothing measurable); peak RSS 4.95 GB.

    OMP_NUM_THREADS=2 python bench/ltx2_speed.py [--layers 1] [--frames 17] [--height 192] [--width 256]
                                                 [--steps 3] [--runs 2]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time
from fractions import Fraction

import torch


def build(layers: int):
    """LTX2ConditionPipeline components at full width, `layers` transformer layers, random weights (fp32)."""
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2ConditionPipeline, LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    torch.manual_seed(0)
    transformer = LTX2VideoTransformer3DModel(num_layers=layers).eval()
    connectors = LTX2TextConnectors(text_proj_in_factor=2, video_connector_num_layers=1,
                                    audio_connector_num_layers=1).eval()
    vae = AutoencoderKLLTX2Video(block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                                 layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
                                 spatial_compression_ratio=32, temporal_compression_ratio=8).eval()
    audio_vae = AutoencoderKLLTX2Audio().eval()           # 53M: its latent statistics are 128 wide
    vocoder = LTX2Vocoder(hidden_channels=32).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
                                                base_image_seq_len=1024, max_image_seq_len=4096)
    return LTX2ConditionPipeline(transformer=transformer, connectors=connectors, vae=vae, audio_vae=audio_vae,
                                 vocoder=vocoder, scheduler=scheduler, text_encoder=None, tokenizer=None)


def step_times(run) -> list[float]:
    """Run `run(mark)` where mark() is called after every step; the step durations (s)."""
    stamps = [time.perf_counter()]
    run(lambda *_: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    from diffusers import LTX2Pipeline
    from kinema.models.families.base import Conditioning
    from kinema.models.families.ltx2_video import LTX2VideoFamily
    from kinema.models.joint import sample_clip
    from kinema.models.sampling import SamplerSettings
    cpu = torch.device("cpu")
    pipe = build(args.layers)
    model = LTX2VideoFamily("bench", cpu, torch.float32, pipe)
    diffusers_pipe = LTX2Pipeline(**{k: getattr(pipe, k) for k in ("transformer", "connectors", "vae", "audio_vae",
                                                                    "vocoder", "scheduler", "text_encoder",
                                                                    "tokenizer")})
    diffusers_pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    width = pipe.connectors.config.caption_channels * pipe.connectors.config.text_proj_in_factor
    embeds = [torch.randn(1, 128, width, generator=g) for _ in range(2)]                     # (1, L, D * layers)
    mask = torch.ones(1, 128, dtype=torch.long)
    pos, neg = (Conditioning("ltx2", p, e, mask=mask) for p, e in zip(("a", "b"), embeds))
    settings = SamplerSettings(num_frames=args.frames, height=args.height, width=args.width,
                               num_inference_steps=args.steps, guidance_scale=3.0, seed=0, frame_rate=Fraction(24))
    layout = model.layout(settings)
    print(f"LTX-2 full width, {args.layers} of 48 layers, "
          f"{sum(p.numel() for p in pipe.transformer.parameters()) / 1e6:.0f}M transformer parameters; "
          f"{args.frames} frames at {args.width}x{args.height} = {layout.frames} latent frames, "
          f"{layout.audio_steps} audio steps, cfg 3, {args.steps} steps, torch threads {torch.get_num_threads()}")

    def kinema(mark):
        with torch.no_grad():
            sample_clip(model, pos, neg, settings, on_step=mark)

    def reference(mark):
        audio = torch.zeros(1, pipe.audio_vae.config.latent_channels, layout.audio_steps, model.latent_mel_bins)
        diffusers_pipe(prompt_embeds=embeds[0], prompt_attention_mask=mask, negative_prompt_embeds=embeds[1],
                       negative_prompt_attention_mask=mask, height=args.height, width=args.width,
                       num_frames=args.frames, frame_rate=24.0, num_inference_steps=args.steps, guidance_scale=3.0,
                       audio_guidance_scale=3.0, stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0,
                       audio_modality_scale=1.0, guidance_rescale=0.0, audio_guidance_rescale=0.0,
                       spatio_temporal_guidance_blocks=None, noise_scale=1.0, audio_latents=audio,
                       generator=torch.Generator().manual_seed(0), output_type="latent",
                       callback_on_step_end=lambda p, i, t, kw: (mark(), kw)[1])

    times = {"kinema": [], "diffusers": []}
    order = [("kinema", kinema), ("diffusers", reference)]
    for fn in (kinema, reference):                                    # warm-up: weights paged in, kernels chosen
        step_times(fn)
    for i in range(args.runs):                                        # alternating, each side first in turn
        for name, fn in (order if i % 2 == 0 else order[::-1]):
            times[name] += step_times(fn)[1:]
    k, d = statistics.median(times["kinema"]), statistics.median(times["diffusers"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(f"s/step  kinema {k:.3f}  diffusers LTX2Pipeline {d:.3f}  ratio {k / d:.3f} (goal <= 1.02)")
    print(f"steps timed: {len(times['kinema'])} + {len(times['diffusers'])}; peak RSS {rss:.2f} GB")


if __name__ == "__main__":
    main()
