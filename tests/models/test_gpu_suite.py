"""bench/gpu_suite.py's --dry-run: every section of the GPU suite at fixture size on the CPU (so the script that runs
once on a GPU is known to work end to end), in its own process as it is run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_suite_dry_run(tmp_path):
    out = tmp_path / "suite.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_suite.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["failed"] == [] and r["device"] == "cpu (dry run)" and "native" in r["attention_available"]
    loop = r["wan_loop"]
    assert loop["max_latent_diff"] < 1e-4                   # Kinema's loop and WanPipeline: the same latents
    assert loop["kinema_s_per_step"] > 0 and loop["diffusers_s_per_step"] > 0
    mem = r["wan_memory"]
    assert {"plain", "fp8", "step_cache", "attention_s_per_call", "offload_1"} <= set(mem)
    assert mem["fp8"]["estimate_gb"] < mem["plain"]["estimate_gb"]
    assert "none on cpu" in mem["offload_1"]["note"] and mem["offload_1"]["warnings"]
    assert mem["step_cache"]["skipped"] > 0 and mem["step_cache"]["fewer_calls"] > 1.5
    assert isinstance(mem["attention_s_per_call"]["native"], float)
    assert r["animatediff"]["frames"] == [8, 64, 64, 3]
    ltx2 = r["ltx2"]                                        # LTX-2 with audio: Kinema's loop, LTX2Pipeline, upsampler
    assert ltx2["latent"][:3] == [1, 4, 5] and ltx2["audio_latent"][0] == 1 and ltx2["steps_timed"] == 2
    assert ltx2["kinema_s_per_step"] > 0 and ltx2["diffusers_s_per_step"] > 0
    up = ltx2["upsampler"]
    assert up["latent_out"][3:] == [2 * ltx2["latent"][3], 2 * ltx2["latent"][4]] and up["max_diff"] < 1e-4
    dec = r["decode"]                                       # VAE decode rows: Kinema's plans against enable_tiling()
    assert set(dec) == {"32x32x5", "32x32x9", "160x96x9"}
    for name, row in dec.items():
        n, hh, ww = (int(v) for v in reversed(name.split("x")))
        assert row["frames"] == [n, hh, ww, 3] and row["kinema"]["seconds"] > 0 and row["diffusers"]["seconds"] > 0
        assert row["max_diff_u8"] <= 64                     # different tiles, the same picture
    assert "by tile" in dec["160x96x9"]["kinema_lean"]["plan"] and "tiles" in dec["32x32x5"]["kinema"]["plan"]
