"""Loading a full-size Wan 2.1 T2V 1.3B denoiser from one ComfyUI-layout file: peak memory and time, in one run.

Writes random-weight files in the original Wan key layout (as Comfy-Org's repackaged wan2.1_t2v_1.3B files):
fp16 (~2.8 GB) and ComfyUI scaled fp8 (~1.4 GB: e4m3fn Linear weights with per-layer scale_weight, a `scaled_fp8`
marker), streamed to disk tensor by tensor, then in fresh processes:
  - detection: kinema.models.files.detect_denoiser names the variant (wan2.1_t2v_1.3b) from shapes alone;
  - kinema:    load_denoiser(fp16 file, float16) and load_denoiser(fp8 file, bfloat16, de-scaled);
  - diffusers: WanTransformer3DModel.from_single_file(fp16 file, local config, float16), the same file.
Peak RSS (ru_maxrss of the child) minus the child's RSS before loading, against the bytes of the loaded weights
in their dtype (goal <= 1.2x). The files are read once before timing so every loader reads from the page cache.
The files are deleted at the end.  Usage: nice python bench/files_load.py [--dir /tmp] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

CONFIG_1_3B = dict(patch_size=[1, 2, 2], num_attention_heads=12, attention_head_dim=128, in_channels=16,
                   out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                   qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None,
                   rope_max_seq_len=1024)

CHILD = textwrap.dedent("""
    import json, resource, sys, time, torch
    mode, path, cfg_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    from kinema.models.files import load_denoiser, detect_denoiser
    from diffusers import WanTransformer3DModel
    def rss():
        return int(open('/proc/self/statm').read().split()[1]) * 4096
    before = rss()
    t0 = time.perf_counter()
    if mode == 'detect':
        print(json.dumps({'variant': detect_denoiser(path).variant, 's': time.perf_counter() - t0})); sys.exit()
    if mode == 'kinema_fp16':
        m = load_denoiser(path, dtype=torch.float16)
    elif mode == 'kinema_fp8_bf16':
        m = load_denoiser(path, dtype=torch.bfloat16)
    else:
        m = WanTransformer3DModel.from_single_file(path, config=cfg_dir, subfolder='transformer',
                                                   local_files_only=True, torch_dtype=torch.float16)
    s = time.perf_counter() - t0
    weights = sum(p.numel() * p.element_size() for p in m.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({'s': s, 'weights': weights, 'peak_minus_before': peak - before, 'before': before,
                      'variant': getattr(m, 'kinema_variant', None)}))
""")


def original_keys(cfg: dict) -> dict[str, tuple]:
    """{original Wan key: shape} for a WanTransformer3DModel config (shapes from diffusers' own module)."""
    from kinema.models.meta import init_empty_weights
    from diffusers import WanTransformer3DModel

    from kinema.models.files.wan import original_to_diffusers
    with init_empty_weights():
        m = WanTransformer3DModel.from_config(cfg)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    keys = ["patch_embedding.weight", "patch_embedding.bias", "head.head.weight", "head.head.bias", "head.modulation"]
    keys += [f"{m}.{l}" for m in ("text_embedding.0", "text_embedding.2", "time_embedding.0", "time_embedding.2",
                                  "time_projection.1") for l in ("weight", "bias")]
    for i in range(cfg["num_layers"]):
        b = f"blocks.{i}."
        keys += [b + "modulation", b + "norm3.weight", b + "norm3.bias"]
        keys += [f"{b}{a}.{p}.{l}" for a in ("self_attn", "cross_attn") for p in "qkvo" for l in ("weight", "bias")]
        keys += [f"{b}{a}.{n}.weight" for a in ("self_attn", "cross_attn") for n in ("norm_q", "norm_k")]
        keys += [f"{b}ffn.{j}.{l}" for j in (0, 2) for l in ("weight", "bias")]
    out = {k: shapes[original_to_diffusers(k)] for k in keys}
    assert {original_to_diffusers(k) for k in keys} == set(shapes), "original key list does not cover the model"
    return out


def write_file(path: Path, shapes: dict[str, tuple], fp8: bool) -> int:
    """Stream a safetensors file: fp16 tensors, or (fp8) e4m3fn Linear weights + float32 scale_weight + marker."""
    g = torch.Generator().manual_seed(0)
    entries = []  # (key, dtype name, shape, producer)
    for k, shape in shapes.items():
        linear = fp8 and len(shape) == 2 and k.endswith(".weight")
        entries.append((k, "F8_E4M3" if linear else "F16", shape, "fp8" if linear else "f16"))
        if linear:
            entries.append((k[:-len("weight")] + "scale_weight", "F32", (), "scale"))
    if fp8:
        entries.append(("scaled_fp8", "F8_E4M3", (0,), "marker"))
    size = {"F16": 2, "F32": 4, "F8_E4M3": 1}
    header, off = {}, 0
    for k, dt, shape, _ in entries:
        n = size[dt] * int(torch.Size(shape).numel())
        header[k] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for k, dt, shape, kind in entries:
            if kind == "marker":
                continue
            if kind == "scale":
                t = torch.tensor(0.02 * 3 / 448, dtype=torch.float32)
            else:
                t = torch.randn(shape, generator=g) * 0.02
                t = (t / (0.02 * 3 / 448)).clamp(-448, 448).to(torch.float8_e4m3fn) if kind == "fp8" else t.half()
            f.write(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return off


def child(mode: str, path: Path, cfg_dir: Path) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    r = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(cfg_dir)], capture_output=True, text=True,
                       env=env)
    if r.returncode:
        raise RuntimeError(f"{mode} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=tempfile.gettempdir())
    ap.add_argument("--keep", action="store_true", help="keep the written files")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kinema_files_bench_", dir=a.dir))
    cfg_dir = work / "config"
    (cfg_dir / "transformer").mkdir(parents=True)
    (cfg_dir / "transformer" / "config.json").write_text(json.dumps(dict(CONFIG_1_3B, _class_name="WanTransformer3DModel")))
    shapes = original_keys(CONFIG_1_3B)
    files = {"fp16": work / "wan2.1_t2v_1.3B_fp16.safetensors", "fp8": work / "wan2.1_t2v_1.3B_fp8_scaled.safetensors"}
    try:
        for name, p in files.items():
            t0 = time.perf_counter()
            n = write_file(p, shapes, fp8=name == "fp8")
            print(f"wrote {p.name}: {p.stat().st_size / 1e9:.2f} GB ({n / 1e9:.2f} GB data) in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
        for name, p in files.items():
            print(f"detected {p.name}: {child('detect', p, cfg_dir)['variant']}", flush=True)
        rows = []
        for mode, key in (("kinema_fp16", "fp16"), ("diffusers_fp16", "fp16"), ("kinema_fp8_bf16", "fp8")):
            subprocess.run(["cat", str(files[key])], stdout=subprocess.DEVNULL, check=True)  # page cache, for all
            r = child(mode, files[key], cfg_dir)
            rows.append((mode, r))
            print(f"{mode:16s} load {r['s']:6.1f} s   peak RSS - before {r['peak_minus_before'] / 1e9:5.2f} GB   "
                  f"weights {r['weights'] / 1e9:5.2f} GB   ratio {r['peak_minus_before'] / r['weights']:.2f}x",
                  flush=True)
        d = dict(rows)
        print(f"load time kinema / diffusers (same fp16 file): "
              f"{d['kinema_fp16']['s'] / d['diffusers_fp16']['s']:.2f}x")
    finally:
        if not a.keep:
            for p in files.values():
                p.unlink(missing_ok=True)
            (cfg_dir / "transformer" / "config.json").unlink()
            (cfg_dir / "transformer").rmdir()
            cfg_dir.rmdir()
            work.rmdir()


if __name__ == "__main__":
    main()
