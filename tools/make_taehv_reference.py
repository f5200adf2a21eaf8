"""Make tests/data/taehv/: reference outputs of the public TAEHV decoder on random weights, for models/taehv.py.

Run once, by hand, with a checkout of github.com/madebyollin/taehv (recorded: commit
1f14a568f24bf8811e0a0ac601613e04fc1581e8, file taehv.py). The reference code is never copied into Kinema: this
script copies taehv.py into a scratch folder, narrows its decoder (the one line `n_f = [256, 128, 64, 64]` becomes
`n_f = [16, 8, 8, 8]`, so the weights are a few hundred KB instead of 40 MB; nothing else changes), imports it there,
and for three layouts builds the reference TAEHV with seeded random weights and decodes seeded random latents:

  taew2_1  16 latent channels, patch 1, time growth (1, 2, 2): Wan 2.1 / Hunyuan (taehv has the same layout)
  taew2_2  48 latent channels, patch 2, time growth (1, 2, 2): Wan 2.2 5B
  taeltx  128 latent channels, patch 4, time growth (2, 2, 2): LTX

Written to the output folder:
  <name>.safetensors     the decoder's state dict (keys decoder.<i>..., the reference's own layout), float32
  <name>.io.safetensors  `latents` (1, C, f, h, w) in Kinema's layout and `frames` (F, H, W, 3) 0..1, the reference's
                         decode_video(parallel=True) output (its NTCHW moved to Kinema's IMAGE layout)
  shapes.json            for each layout at the reference's FULL widths: {key: shape} of its decoder state dict
  reference.json         the reference commit, the substitution, seeds and the torch version

Usage: python tools/make_taehv_reference.py /path/to/taehv-checkout [tests/data/taehv]
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

GAIN = 1.0                   # weight scale: frames vary (std 0.08-0.26) and 90-100 % stay inside 0..1
COMMIT = "1f14a568f24bf8811e0a0ac601613e04fc1581e8"
NARROW = ("n_f = [256, 128, 64, 64]", "n_f = [16, 8, 8, 8]")
LAYOUTS = {
    "taew2_1": dict(patch_size=1, latent_channels=16),
    "taew2_2": dict(patch_size=2, latent_channels=48),
    "taeltx": dict(patch_size=4, latent_channels=128, encoder_time_downscale=(True, True, True),
                   decoder_time_upscale=(True, True, True)),
}
LATENT = {"taew2_1": (3, 4, 5), "taew2_2": (3, 3, 4), "taeltx": (2, 2, 3)}     # latent frames, height, width


def _import(source: Path, narrow: bool, scratch: Path):
    text = source.read_text()
    if narrow:
        assert text.count(NARROW[0]) == 1, "the reference changed: check the substitution"
        text = text.replace(*NARROW)
    name = "taehv_narrow" if narrow else "taehv_full"
    path = scratch / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Seeded weights of a scale that keeps activations in range (outputs mostly inside 0..1, not clamped)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        fan_in = p[0].numel() if p.ndim > 1 else 1
        scale = GAIN / fan_in ** 0.5 if p.ndim > 1 else 0.05
        p.data = torch.randn(p.shape, generator=g) * scale
    last = model.decoder[-1]
    last.bias.data = last.bias.data + 0.5                                          # centre the frames at grey


def main() -> None:
    from safetensors.torch import save_file
    checkout = Path(sys.argv[1])
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "tests/data/taehv")
    source = checkout / "taehv.py"
    commit = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or COMMIT
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="taehv-ref-"))
    try:
        narrow, full = _import(source, True, scratch), _import(source, False, scratch)
        shapes = {}
        for k, (name, kwargs) in enumerate(LAYOUTS.items()):
            ref = full.TAEHV(checkpoint_path=None, **kwargs)
            shapes[name] = {key: list(v.shape) for key, v in ref.state_dict().items() if key.startswith("decoder.")}
            model = narrow.TAEHV(checkpoint_path=None, **kwargs).eval()
            _randomise(model, 100 + k)
            f, h, w = LATENT[name]
            z = torch.randn(1, f, kwargs["latent_channels"], h, w, generator=torch.Generator().manual_seed(k))
            with torch.no_grad():
                frames = model.decode_video(z, parallel=True, show_progress_bar=False)        # (1, F, 3, H, W)
                serial = model.decode_video(z, parallel=False, show_progress_bar=False)
            assert (frames - serial).abs().max() < 1e-5                       # its two paths agree
            inside = ((frames > 0) & (frames < 1)).float().mean().item()
            print(f"{name}: latents {tuple(z.shape)} -> frames {tuple(frames.shape)}, {inside:.0%} not clamped, "
                  f"std {frames.std():.3f}, std over time {frames.std(dim=1).mean():.3f}")
            sd = {key: v.contiguous() for key, v in model.state_dict().items() if key.startswith("decoder.")}
            save_file(sd, str(out / f"{name}.safetensors"))
            save_file({"latents": z.transpose(1, 2).contiguous(),                   # (1, C, f, h, w)
                       "frames": frames[0].permute(0, 2, 3, 1).contiguous()},       # (F, H, W, 3)
                      str(out / f"{name}.io.safetensors"))
        (out / "shapes.json").write_text(json.dumps(shapes, indent=1) + "\n")
        (out / "reference.json").write_text(json.dumps({
            "reference": "https://github.com/madebyollin/taehv taehv.py", "commit": commit,
            "substitution": list(NARROW), "weights": "seeded randn / sqrt(fan_in) * GAIN (1.0), biases randn * 0.05 (+ 0.5 on the last), seeds 100..102",
            "latents": "seeded randn, seeds 0..2", "call": "TAEHV(checkpoint_path=None, **layout).decode_video("
            "z, parallel=True)", "layouts": {k: {a: list(v) if isinstance(v, tuple) else v for a, v in kw.items()}
                                             for k, kw in LAYOUTS.items()},
            "torch": torch.__version__}, indent=1) + "\n")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
