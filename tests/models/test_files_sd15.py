"""AnimateDiff from ComfyUI users' files (kinema.models.files.sd15): an SD 1.5 checkpoint written by ComfyUI's own
classes (UNetModel, AutoencoderKL, SDClipModel, saved through comfy.supported_models.SD15's CheckpointSave hooks) and a
motion module written by AnimateDiff's own classes (guoyww/AnimateDiff, VanillaTemporalModule), both tiny
(tests/data/comfy, tools/make_comfy_reference.py).

Tolerance 1e-4 absolute, float32 on both sides on the same fp16 weights (outputs ~2-15).

The motion modules: diffusers' AnimateDiffTransformer3D (what Kinema runs, folder or file) normalises its input over
all frames of the clip (GroupNorm on (B, C, F, H, W)); AnimateDiff's own TemporalTransformer3DModel normalises each
frame ((B F) C H W). The weights map exactly (shown with the per-frame norm swapped in, 3e-6); with diffusers' norm
the outputs differ (~1-2 here) — the same for the diffusers folder route, a difference of diffusers, noted here.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from kinema.models.files.sd15 import (find_clip_tokenizer, load_animatediff_files, load_motion_module,
                                      load_sd15_checkpoint)

from comfy_recipe import DATA, write

REF = load_file(str(DATA / "reference.safetensors"))
MM = DATA / "mm_tiny_v2.fp16.safetensors"
TOL = 1e-4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write("sd15_tiny", tmp_path_factory.mktemp("sd15") / "sd15_tiny.safetensors")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A byte-level BPE vocabulary within the tiny CLIP's 100 ids (bos 0, pad 1, eos 2, letters, no merges)."""
    d = tmp_path_factory.mktemp("tok") / "sd1_tokenizer"
    d.mkdir()
    vocab = {"<|startoftext|>": 0, "!": 1, "<|endoftext|>": 2}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return d


def test_sd15_checkpoint_reproduces_comfyui(one_thread, checkpoint):
    unet, vae, text = load_sd15_checkpoint(checkpoint)
    assert unet.config.block_out_channels == (32, 64) or list(unet.config.block_out_channels) == [32, 64]
    assert unet.config.cross_attention_dim == 128 and unet.config.layers_per_block == 1
    with torch.no_grad():
        eps = unet(REF["sd15.x"], REF["sd15.t"], REF["sd15.context"]).sample
        decoded = vae.decode(REF["sd15.z"]).sample
        hidden = text(REF["sd15.ids"]).last_hidden_state
    assert (eps - REF["sd15.eps"]).abs().max().item() < TOL
    assert (decoded - REF["sd15.decoded"]).abs().max().item() < TOL
    assert (hidden - REF["sd15.hidden"]).abs().max().item() < TOL


def _module(adapter, name):
    block, j = name.rsplit(".motion_modules.", 1)
    owner = adapter.mid_block if block == "mid_block" else getattr(adapter, block.split(".")[0])[int(block[-1])]
    return owner.motion_modules[int(j)]


class _PerFrameNorm(torch.nn.Module):
    """AnimateDiff's own norm: the same GroupNorm weights, statistics per frame."""

    def __init__(self, gn):
        super().__init__()
        self.gn = gn

    def forward(self, x):                                                    # (B, C, F, H, W)
        b, c, f, h, w = x.shape
        y = self.gn(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))       # (B F, C, H, W)
        return y.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def test_motion_module_weights_map_to_animatediffs_own_classes(one_thread):
    adapter = load_motion_module(MM)
    cfg = adapter.config
    assert list(cfg.block_out_channels) == [32, 64] and cfg.motion_layers_per_block == 1 and cfg.use_motion_mid_block
    names = sorted({k[3:-2] for k in REF if k.startswith("mm.") and k.endswith(".x")})
    assert len(names) == 7                                        # 2 down, 1 mid, 2 x 2 up
    for name in names:
        module, x, ref = _module(adapter, name), REF[f"mm.{name}.x"], REF[f"mm.{name}.out"]
        b, c, f, h, w = x.shape
        flat = x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        with torch.no_grad():
            inflated = module(flat, num_frames=f)
            module.norm = _PerFrameNorm(module.norm)
            per_frame = module(flat, num_frames=f)
        per_frame = per_frame.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
        inflated = inflated.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)
        assert (per_frame - ref).abs().max().item() < TOL, name
        assert (inflated - ref).abs().max().item() > 100 * TOL, name   # diffusers' clip-wide norm (module docstring)


def test_animatediff_from_files_runs_end_to_end(one_thread, checkpoint, tokenizer_dir):
    from kinema.models.sampling import SamplerSettings, sample
    model = load_animatediff_files(checkpoint, MM, [tokenizer_dir.parent / "missing", tokenizer_dir])
    assert model.name == "animatediff" and type(model.unet).__name__ == "UNetMotionModel"
    pos, neg = model.encode_prompt("a cat walks"), model.encode_prompt("")
    assert pos.embeds.shape == (1, 77, 128)
    settings = SamplerSettings(num_frames=6, height=32, width=32, num_inference_steps=2, guidance_scale=3.0, seed=0)
    latents = sample(model, pos, neg, settings)
    frames = model.decode(latents)
    assert model.spatial_ratio == 2 and latents.shape == (1, 4, 6, 16, 16)   # the tiny VAE has two levels
    assert frames.shape == (6, 32, 32, 3) and torch.isfinite(frames).all()


def test_checkpoint_refusals_name_the_input_and_the_fix(checkpoint, tmp_path):
    with pytest.raises(ValueError) as e:
        find_clip_tokenizer([tmp_path / "sd1_tokenizer"])
    assert str(e.value).startswith("`checkpoint` carries no tokenizer") and "models/text_encoders/sd1_tokenizer" in \
        str(e.value) and "comfy/sd1_tokenizer" in str(e.value)
    sd = load_file(str(checkpoint))
    cases = {
        "sdxl": ({**sd, "model.diffusion_model.label_emb.0.0.weight": torch.zeros(1)}, "is an SDXL checkpoint"),
        "ltx2": ({"audio_vae.per_channel_statistics.mean-of-means": torch.zeros(1)}, "is an LTX-2 all-in-one"),
        "unet_only": ({k: v for k, v in sd.items() if k.startswith("model.")}, "is not an SD 1.5 all-in-one"),
    }
    for name, (tensors, start) in cases.items():
        save_file(tensors, tmp_path / f"{name}.safetensors")
        with pytest.raises(ValueError) as e:
            load_sd15_checkpoint(tmp_path / f"{name}.safetensors")
        assert str(e.value).startswith(f"`checkpoint` {start}"), str(e.value)
        assert "Pick" in str(e.value) or "Load Audio Model" in str(e.value)
    with pytest.raises(ValueError, match=r"^`motion_module` is not an AnimateDiff motion module.*animatediff_models"):
        load_motion_module(checkpoint)
    (tmp_path / "mm.ckpt").write_bytes(b"never unpickled")
    with pytest.raises(ValueError, match=r"^`motion_module` must be a .safetensors or .gguf file"):
        load_motion_module(tmp_path / "mm.ckpt")
