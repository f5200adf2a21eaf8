"""Write an LTX-2 latent upsampler as ONE file in Lightricks' / ComfyUI's layout (models/latent_upscale_models/).

The inverse of what Load Upscale Model reads from such a file (models/files/upsampler.py): the tensors of
diffusers' LTX2LatentUpsamplerModel under their own names (Lightricks' names are the same), and the architecture as
JSON in the safetensors metadata under "config", in Lightricks' names (spatial_scale, rational_resampler).

    python tools/make_upsampler_file.py FOLDER OUT.safetensors [--dtype bf16]
        FOLDER: an LTX2LatentUpsamplePipeline folder (its latent_upsampler/ is read), or that latent_upsampler/
    python tools/make_upsampler_file.py --fixture OUT.safetensors [--temporal]
        the random-weight fixture upsampler (models/fixtures.build_ltx2_upsampler), for trying the file path

The tests make their files the same way (from the fixture), so no binary is committed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def upsampler_of(folder: Path):
    """The LTX2LatentUpsamplerModel of a pipeline folder (or of its latent_upsampler/ itself), on the CPU."""
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    sub = folder / "latent_upsampler" if (folder / "latent_upsampler" / "config.json").is_file() else folder
    if not (sub / "config.json").is_file():
        raise SystemExit(f"{folder}: no latent_upsampler/config.json (not an LTX2LatentUpsamplePipeline folder)")
    return LTX2LatentUpsamplerModel.from_pretrained(sub, use_safetensors=True).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", nargs="?", type=Path, help="LTX2LatentUpsamplePipeline folder (or its latent_upsampler/)")
    p.add_argument("out", type=Path, help="the .safetensors file to write")
    p.add_argument("--fixture", action="store_true", help="write the random-weight fixture upsampler instead")
    p.add_argument("--temporal", action="store_true", help="with --fixture: the 2x space + 2x time fixture")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weights' dtype (default: as stored)")
    args = p.parse_args(argv)
    from kinema.models.files.upsampler import lightricks_config, save_upsampler_file
    if args.fixture:
        from kinema.models.fixtures import build_ltx2_upsampler
        net = build_ltx2_upsampler(temporal=args.temporal).latent_upsampler
    elif args.source is None:
        p.error("give a source folder, or --fixture")
    else:
        net = upsampler_of(args.source)
    path = save_upsampler_file(net, args.out, DTYPES.get(args.dtype))
    print(f"wrote {path} ({path.stat().st_size} bytes): {lightricks_config(net)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
