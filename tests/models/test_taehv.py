"""models/taehv.py: Kinema's TAEHV-style tiny decoder reproduces the public reference's outputs (tests/data/taehv/,
made by tools/make_taehv_reference.py from madebyollin/taehv on random weights), reads the architecture from the keys
of every real layout, finds the file that fits a model, and refuses what it cannot run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from kinema.models import taehv

DATA = Path(__file__).resolve().parents[1] / "data" / "taehv"
LAYOUTS = {"taew2_1": (16, 8, 4), "taew2_2": (48, 16, 4), "taeltx": (128, 32, 8)}   # channels, px / cell, t


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_decoder_reproduces_the_reference(name):
    io = load_file(str(DATA / f"{name}.io.safetensors"))
    z, expected = io["latents"], io["frames"]                                          # (1, C, f, h, w), (F, H, W, 3)
    dec = taehv.load(DATA / f"{name}.safetensors")
    channels, spatial, temporal = LAYOUTS[name]
    assert (dec.spec.latent_channels, dec.spatial, dec.temporal) == (channels, spatial, temporal)
    f, h, w = z.shape[2:]
    assert expected.shape == (temporal * (f - 1) + 1, spatial * h, spatial * w, 3)
    for chunk in (0, 1):                                                               # all at once; frame by frame
        got = dec.decode(z, chunk=chunk)
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert (got - expected).abs().max() < 1e-4
    chunks = list(dec.decode_chunks(z, chunk=1))
    assert [c.shape[0] for c in chunks] == [1] + [temporal] * (f - 1)                 # streams like the VAE


def test_architecture_from_the_keys_of_the_full_size_files():
    """The reference's decoder state dicts at full width (shapes only): detected and rebuilt key for key."""
    shapes = json.loads((DATA / "shapes.json").read_text())
    for name, layout in shapes.items():
        spec = taehv.detect({k: tuple(v) for k, v in layout.items()})
        assert spec.name == name and spec.widths == (256, 128, 64, 64)
        mine = {k: list(v.shape) for k, v in taehv.TinyVideoDecoder(spec).state_dict().items()}
        assert mine == layout
    assert taehv.detect({k: tuple(v) for k, v in shapes["taew2_1"].items()}).strides == (1, 2, 2)


def test_time_growth_lowered_to_the_model(tmp_path):
    """A file that makes 8 frames per latent frame, for a model that needs 4: the first stage keeps one frame."""
    dec = taehv.load(DATA / "taeltx.safetensors", temporal=4)
    assert dec.temporal == 4 and dec.spec.strides == (1, 2, 2)
    z = torch.randn(1, 128, 3, 2, 2)
    assert dec.decode(z).shape == (9, 64, 64, 3)
    with pytest.raises(ValueError, match="must make 3 frames per latent frame"):
        taehv.load(DATA / "taeltx.safetensors", temporal=3)


def test_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(ValueError, match="must be a .safetensors file"):
        taehv.load(tmp_path / "taew2_1.pth")
    other = tmp_path / "other.safetensors"
    save_file({"decoder.1.weight": torch.zeros(4, 4, 3, 3)}, str(other))
    with pytest.raises(ValueError, match="must be a TAEHV-style tiny video decoder"):
        taehv.load(other)
    sd = load_file(str(DATA / "taew2_2.safetensors"))
    save_file({**sd, "decoder.0.weight": torch.zeros(16, 48, 1, 1)}, str(tmp_path / "taew2_2_super.safetensors"))
    with pytest.raises(ValueError, match="'super' decoder"):
        taehv.load(tmp_path / "taew2_2_super.safetensors")
    del sd["decoder.3.conv.0.weight"]
    save_file(sd, str(tmp_path / "cut.safetensors"))
    with pytest.raises(ValueError, match="exactly the decoder tensors"):
        taehv.load(tmp_path / "cut.safetensors")
    dec = taehv.load(DATA / "taew2_1.safetensors")
    with pytest.raises(ValueError, match="16 channels"):
        dec.decode(torch.zeros(1, 48, 2, 2, 2))


def test_finds_the_file_that_fits_the_model(models_dir, tmp_path):
    from kinema.models.families import load_model
    wan = load_model(models_dir / "diffusers" / "fixture-wan-t2v")                  # 16 channels, 8 px, t 4
    folder = tmp_path / "vae_approx"
    folder.mkdir()
    assert taehv.find_for(wan, [folder, tmp_path / "missing"]) is None
    (folder / "broken.safetensors").write_bytes(b"not a file")
    for name in ("taeltx", "taew2_2", "taew2_1"):
        (folder / f"{name}.safetensors").write_bytes((DATA / f"{name}.safetensors").read_bytes())
    assert taehv.find_for(wan, [folder]).name == "taew2_1.safetensors"
    dec = taehv.for_model(wan, [folder])
    assert dec is taehv.for_model(wan, [folder]) and dec.source == "taew2_1.safetensors"   # loaded once
