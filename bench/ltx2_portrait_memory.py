"""Peak memory of the LTX-2 portrait path against the audio length, on the tiny random LTX-2 of the tests (32x32,
9-frame windows of its 2x VAE, 1 step): one fresh process per run, the RSS high-water mark (VmHWM) reset
(/proc/self/clear_refs, Linux) after the model is loaded and warmed up, frames streamed window by window
(animate_portrait_windows). What it shows is the shape of the curve (flat: one window at a time, the speech
encoded per window), not LTX-2's real footprint.

    python bench/ltx2_portrait_memory.py [--seconds 5 30]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

BUILD = r"""
import sys, torch
from diffusers import AutoencoderKLLTX2Audio, LTX2Pipeline
from kinema.models.fixtures import build_ltx2
pipe = build_ltx2()
torch.manual_seed(0)   # as tests/models/test_ltx2_portrait.py: an audio VAE that compresses 4x (it can encode)
audio_vae = AutoencoderKLLTX2Audio(
    base_channels=4, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=2, attn_resolutions=None, in_channels=2,
    resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
    mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8)
LTX2Pipeline(**{**pipe.components, "audio_vae": audio_vae}).save_pretrained(sys.argv[1])
"""

CHILD = r"""
import json, math, re, sys, time, torch
from pathlib import Path
from kinema.models.families import load_portrait_model
from kinema.models.portrait import animate_portrait_windows
folder, seconds = sys.argv[1], float(sys.argv[2])
model = load_portrait_model(folder)
model.long_side, model.default_frames = 32, 9
portrait = torch.rand(1, 48, 40, 3, generator=torch.Generator().manual_seed(0))
speech = lambda s: (0.5 * torch.sin(2 * math.pi * 180 * torch.arange(int(s * 16000)) / 16000)).view(1, -1)
for _ in animate_portrait_windows(model, portrait, speech(1.0), 16000, 25, num_inference_steps=1):   # warm up
    pass
wav = speech(seconds)
hwm = lambda: int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
Path("/proc/self/clear_refs").write_text("5")
base, t0, frames = hwm(), time.time(), 0
for _, new in animate_portrait_windows(model, portrait, wav, 16000, 25, num_inference_steps=1):
    frames += len(new)
print(json.dumps({"seconds": seconds, "frames": frames, "base_mib": base / 1024, "peak_mib": hwm() / 1024,
                  "wall_s": time.time() - t0}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, nargs="+", default=[5.0, 30.0])
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = f"{tmp}/fixture-ltx2-portrait"
        subprocess.run([sys.executable, "-c", BUILD, folder], check=True, capture_output=True)
        rows = []
        for seconds in args.seconds:
            out = subprocess.run([sys.executable, "-c", CHILD, folder, str(seconds)], capture_output=True, text=True,
                                 check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{seconds:5.1f} s: {r['frames']:5d} frames, peak RSS {r['peak_mib']:.1f} MiB "
                  f"(after warm-up {r['base_mib']:.1f} MiB), {r['wall_s']:.1f} s")
    print(f"peak({rows[-1]['seconds']:.0f} s) - peak({rows[0]['seconds']:.0f} s) = "
          f"{rows[-1]['peak_mib'] - rows[0]['peak_mib']:.1f} MiB")


if __name__ == "__main__":
    main()
