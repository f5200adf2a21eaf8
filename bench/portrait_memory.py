"""Peak memory of Portrait Animate against the audio length: one fresh process per run; the RSS high-water mark
(VmHWM) is reset (/proc/self/clear_refs, Linux) after the model is loaded and the audio made, so each peak is the
generation's alone. Prints the peak RSS of the process for 10 s and 60 s of speech-like audio, streamed window
by window (animate_portrait_windows) and collected into one IMAGE (animate_portrait: the output itself grows by
frames x 32 x 32 x 3 x 4 bytes, 12 KiB a frame).

    python bench/portrait_memory.py [--steps 1] [--fps 25]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, re, sys, time, torch
from pathlib import Path
from kinema.models.families.tiny_portrait import KinemaTinyPortraitFamily
from kinema.models.tiny.portrait_pipeline import DEFAULT_WEIGHTS
from training.tiny.portrait_data import sample_portrait, synth_voice
from kinema.models.portrait import animate_portrait, animate_portrait_windows
seconds, mode, steps, fps = float(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
model = KinemaTinyPortraitFamily.load(DEFAULT_WEIGHTS, torch.device("cpu"), torch.float32)
portrait = sample_portrait(128).unsqueeze(0)
wav = synth_voice(torch.Generator().manual_seed(0), 1.0, 16000).view(1, -1)
animate_portrait(model, portrait, wav, 16000, fps, num_inference_steps=1)          # warm up
wav = synth_voice(torch.Generator().manual_seed(0), seconds, 16000).view(1, -1)
hwm = lambda: int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))
Path("/proc/self/clear_refs").write_text("5")
base = hwm()
t0 = time.time()
if mode == "stream":
    frames = sum(len(f) for _, f in animate_portrait_windows(model, portrait, wav, 16000, fps, num_inference_steps=steps))
else:
    frames = len(animate_portrait(model, portrait, wav, 16000, fps, num_inference_steps=steps))
peak = hwm()
print(json.dumps({"seconds": seconds, "mode": mode, "frames": frames, "base_mib": base / 1024,
                  "peak_mib": peak / 1024, "audio_mib": wav.numel() * 4 / 2**20, "wall_s": time.time() - t0}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--fps", type=float, default=25.0)
    args = p.parse_args()
    rows = []
    for mode in ("stream", "image"):
        for seconds in (10, 60):
            out = subprocess.run([sys.executable, "-c", CHILD, str(seconds), mode, str(args.steps), str(args.fps)],
                                 capture_output=True, text=True, check=True, cwd=REPO)   # REPO: training/
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{mode:6s} {seconds:3d} s: {r['frames']:5d} frames, peak RSS {r['peak_mib']:.1f} MiB "
                  f"(after warm-up {r['base_mib']:.1f} MiB; the 16 kHz audio itself {r['audio_mib']:.1f} MiB), "
                  f"{r['wall_s']:.1f} s")
    for mode in ("stream", "image"):
        a, b = [r for r in rows if r["mode"] == mode]
        print(f"{mode}: 60 s peak - 10 s peak = {b['peak_mib'] - a['peak_mib']:.1f} MiB "
              f"(audio grows by {b['audio_mib'] - a['audio_mib']:.1f} MiB)")


if __name__ == "__main__":
    main()
