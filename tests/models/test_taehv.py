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


# Every tiny kind at its real widths (256/128/64/64): Wan 2.1 and Hunyuan (taew2_1 / taehv: one layout), Wan 2.2 5B
# (taew2_2), Hunyuan 1.5 (taehv1_5), LTX (taeltx); channels, pixels per cell, frames per latent frame.
KINDS = {"taew2_1": (16, 8, 4), "taew2_2": (48, 16, 4), "taehv1_5": (32, 16, 4), "taeltx": (128, 32, 8)}


def _full_width(name: str, seed: int = 0) -> taehv.TinyVideoDecoder:
    channels, spatial, temporal = KINDS[name]
    strides = (2, 2, 2) if temporal == 8 else (1, 2, 2)
    dec = taehv.TinyVideoDecoder(taehv.TinySpec(channels, spatial // 8, (256, 128, 64, 64), strides)).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in dec.parameters():                                  # frames that vary, mostly inside 0..1
            p.normal_(0, p[0].numel() ** -0.5 if p.ndim == 4 else 0.02)
    return dec


def _plain(dec: taehv.TinyVideoDecoder, z: torch.Tensor) -> torch.Tensor:
    """The architecture layer after layer, one latent frame at a time (upsampling, time growth and conv apart)."""
    memory: dict = {}
    frames = []
    for k in range(z.shape[2]):
        x = z[0, :, k:k + 1].transpose(0, 1)                                           # (1, C, h, w)
        for i, layer in enumerate(dec.decoder):
            if isinstance(layer, taehv._Memory):
                past = torch.cat([memory.get(i, torch.zeros_like(x[:1])), x[:-1]])
                memory[i] = x[-1:]
                x = layer(x, past)
            else:
                x = layer(x)
        frames.append(torch.nn.functional.pixel_shuffle(x, dec.spec.patch).clamp(0, 1))
    return torch.cat(frames)[dec.temporal - 1:].permute(0, 2, 3, 1)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_at_real_width_gives_the_exact_frame_count_and_size(name):
    channels, spatial, temporal = KINDS[name]
    dec = _full_width(name)
    assert dec.spec.name == name and (dec.spatial, dec.temporal) == (spatial, temporal)
    assert taehv.detect({k: tuple(v.shape) for k, v in dec.state_dict().items()}) == dec.spec
    z = torch.randn(1, channels, 3, 3, 5, generator=torch.Generator().manual_seed(1))
    got = dec.decode(z)
    assert got.shape == (temporal * 2 + 1, spatial * 3, spatial * 5, 3) and got.dtype == torch.float32
    assert 0 <= got.min() and got.max() <= 1 and got.std() > 0.05 and ((got > 0) & (got < 1)).float().mean() > 0.3
    with torch.no_grad():
        assert (got - _plain(dec, z)).abs().max() < 1e-4                        # the fused path = the layers


def test_streaming_pieces_give_the_same_frames(monkeypatch):
    """Latent frames per call and frames per call of the last stage change the result by float rounding only."""
    dec = _full_width("taew2_1", seed=2)
    z = torch.randn(1, 16, 4, 4, 6, generator=torch.Generator().manual_seed(3))
    whole = dec.decode(z)
    monkeypatch.setattr(taehv, "TAIL_PX", 1)                                         # one frame at a time
    pieces = list(dec.decode_chunks(z, chunk=3))
    assert [p.shape[0] for p in pieces] == [9, 4]
    assert (torch.cat(pieces) - whole).abs().max() < 1e-5
    first = next(dec.decode_chunks(z[:, :, :1], chunk=1))                            # the live preview's call
    assert first.shape == (1, 32, 48, 3) and (first[0] - whole[0]).abs().max() < 1e-5
