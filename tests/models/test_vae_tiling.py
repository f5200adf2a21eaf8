"""models/vae_tiling.py: chunked decode/encode equal diffusers' own, tiled ones stay within stated bounds of the untiled,
the planner follows the memory budget, latents files round-trip; and media.VideoWriter streams chunks."""
from __future__ import annotations

import collections
import math
import os
import warnings

import pytest
import torch

from kinema.models import media, vae_tiling
from kinema.models.vae_tiling import TileSettings

BIG = TileSettings(memory_mb=1 << 20)          # a budget that never tiles: the untiled reference

# Tiled vs untiled, on the tiny random-weight fixtures, |difference| of 0..1 pixels (measured: Wan 0.0018 mean,
# 0.149 max; AnimateDiff 0.020 mean, 0.195 max; tiled encode, mean |diff| / mean |latent|: Wan 0.057, SD 0.197).
# Random weights are a hard case: the middle attention of both VAEs mixes the whole frame and the SD VAE's
# GroupNorm takes statistics per tile, so the seams are where it differs.
WAN_MEAN, WAN_MAX = 0.003, 0.2
AD_MEAN, AD_MAX = 0.03, 0.25
ENC_REL = {"wan": 0.1, "sd": 0.25}             # tiled encode: mean |diff| relative to mean |latent|


@pytest.fixture(scope="module")
def wan_vae(models_dir):
    from diffusers import AutoencoderKLWan
    return AutoencoderKLWan.from_pretrained(models_dir / "diffusers" / "fixture-wan-t2v" / "vae").eval()


@pytest.fixture(scope="module")
def sd_vae(models_dir):
    from diffusers import AutoencoderKL
    return AutoencoderKL.from_pretrained(models_dir / "diffusers" / "fixture-animatediff" / "vae").eval()


def _to_image(video):  # diffusers (1, 3, F, H, W) -1..1 -> IMAGE (F, H, W, 3) 0..1
    return (video[0].permute(1, 2, 3, 0) / 2 + 0.5).clamp(0, 1)


# ---- time: chunks are exact -----------------------------------------------------------------------------------

def test_wan_chunked_decode_equals_diffusers(wan_vae):
    torch.manual_seed(0)
    z = torch.randn(1, 16, 5, 4, 6)
    with torch.no_grad():
        expected = _to_image(wan_vae.decode(z).sample)                                # (17, 32, 48, 3)
    for chunk, sizes in ((1, [1, 4, 4, 4, 4]), (3, [1, 12, 4])):
        chunks = list(vae_tiling.decode_chunks(wan_vae, z, TileSettings(memory_mb=1 << 20, chunk_frames=chunk)))
        assert [c.shape[0] for c in chunks] == sizes       # causal: latent frame 0 -> 1 frame alone, then 4 each
        got = torch.cat(chunks)
        assert got.shape == expected.shape == (17, 32, 48, 3)
        assert (got - expected).abs().max() < 1e-5


def test_wan22_style_vae_chunked_equals_diffusers():
    """Wan 2.2's VAE (residual blocks, 2x2 patches, 16 px cells) through the same chunked path."""
    from diffusers import AutoencoderKLWan
    torch.manual_seed(0)
    vae = AutoencoderKLWan(base_dim=8, z_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1, is_residual=True,
                           in_channels=12, out_channels=12, patch_size=2, scale_factor_spatial=16,
                           latents_mean=[0.0] * 8, latents_std=[1.0] * 8).eval()
    z = torch.randn(1, 8, 4, 2, 3)
    with torch.no_grad():
        expected = _to_image(vae.decode(z).sample)
        x = torch.rand(5, 32, 48, 3)
        expected_z = vae.encode(x.permute(3, 0, 1, 2)[None] * 2 - 1).latent_dist.mode()
    got = vae_tiling.decode(vae, z, TileSettings(memory_mb=1 << 20, chunk_frames=2))
    assert got.shape == expected.shape == (13, 32, 48, 3) and (got - expected).abs().max() < 1e-5
    got_z = vae_tiling.encode(vae, x, TileSettings(memory_mb=1 << 20, chunk_frames=2))
    assert got_z.shape == expected_z.shape and (got_z - expected_z).abs().max() < 1e-5


def test_wan_chunked_encode_equals_diffusers(wan_vae):
    x = torch.rand(13, 32, 32, 3)
    with torch.no_grad():
        expected = wan_vae.encode(x.permute(3, 0, 1, 2)[None] * 2 - 1).latent_dist.mode()  # (1, 16, 4, 4, 4)
    got = vae_tiling.encode(wan_vae, x, TileSettings(memory_mb=1 << 20, chunk_frames=2))
    assert got.shape == expected.shape and (got - expected).abs().max() < 1e-5
    with pytest.raises(ValueError, match="`images` must be 4k\\+1"):
        vae_tiling.encode(wan_vae, x[:12])


# ---- space: tiles within bounds -------------------------------------------------------------------------------

def _errors(a, b):
    d = (a - b).abs()
    return d.mean().item(), d.max().item()


def test_wan_tiled_decode_within_bound(wan_vae):
    torch.manual_seed(0)
    z = torch.randn(1, 16, 2, 8, 12)                                                 # 5 frames of 64x96
    settings = TileSettings(memory_mb=1 << 20, tile_px=48, overlap_px=16)
    plan = vae_tiling.plan(wan_vae, tuple(z.shape[1:]), settings)
    assert plan.num_tiles(8, 12) == 6 and plan.overlap == 2
    full, tiled = vae_tiling.decode(wan_vae, z, BIG), vae_tiling.decode(wan_vae, z, settings)
    assert full.shape == tiled.shape == (5, 64, 96, 3)
    mean, worst = _errors(tiled, full)
    assert mean < WAN_MEAN and worst < WAN_MAX, (mean, worst)


def test_animatediff_tiled_decode_within_bound(sd_vae):
    torch.manual_seed(0)
    z = torch.randn(1, 4, 3, 24, 32)                                                 # 3 frames, 2 px per cell
    settings = TileSettings(memory_mb=1 << 20, tile_px=32, chunk_frames=2)
    assert vae_tiling.plan(sd_vae, tuple(z.shape[1:]), settings).num_tiles(24, 32) == 6
    chunks = list(vae_tiling.decode_chunks(sd_vae, z, settings))
    assert [c.shape[0] for c in chunks] == [2, 1]
    with torch.no_grad():
        frames = sd_vae.decode(z[0].transpose(0, 1)).sample                           # (3, 3, 48, 64)
    full = (frames.permute(0, 2, 3, 1) / 2 + 0.5).clamp(0, 1)
    assert (vae_tiling.decode(sd_vae, z, BIG) - full).abs().max() < 1e-5                     # chunks alone: exact
    mean, worst = _errors(torch.cat(chunks), full)
    assert mean < AD_MEAN and worst < AD_MAX, (mean, worst)


@pytest.mark.parametrize("which", ["wan", "sd"])
def test_tiled_encode_within_bound(which, wan_vae, sd_vae):
    vae, size = (wan_vae, (5, 96, 128)) if which == "wan" else (sd_vae, (3, 48, 64))
    y, x = torch.meshgrid(torch.linspace(0, 1, size[1]), torch.linspace(0, 1, size[2]), indexing="ij")
    frames = torch.stack([torch.stack([y, x, (x + y + t / 10) % 1], -1) for t in range(size[0])])  # smooth colours
    full = vae_tiling.encode(vae, frames, BIG)
    settings = TileSettings(memory_mb=1 << 20, tile_px=64 if which == "wan" else 32)
    assert vae_tiling.plan(vae, tuple(full.shape[1:]), settings, encode=True).num_tiles(*full.shape[-2:]) > 1
    tiled = vae_tiling.encode(vae, frames, settings)
    assert tiled.shape == full.shape
    rel = ((tiled - full).abs().mean() / full.abs().mean()).item()
    assert rel < ENC_REL[which], rel


def test_ramps_cross_fade_to_one():
    starts = vae_tiling._starts(20, 8, 2)
    assert starts[0] == 0 and starts[-1] == 12 and len(starts) == 3
    total = torch.zeros(20 * 4)
    for s, w in zip(starts, vae_tiling._ramps(starts, 8, 4)):
        total[s * 4:(s + 8) * 4] += w
    assert torch.allclose(total, torch.ones_like(total))
    assert vae_tiling._starts(6, 8, 2) == [0]


# ---- the memory plan ------------------------------------------------------------------------------------------

def test_plan_follows_the_budget(wan_vae, sd_vae):
    shape = (16, 21, 60, 104)                                                        # Wan 81 frames at 832x480
    roomy = vae_tiling.plan(wan_vae, shape, TileSettings(memory_mb=1 << 20))
    assert roomy.num_tiles(60, 104) == 1 and roomy.chunk == 1                     # on the CPU: one latent frame
    on_gpu = lambda vae, shape: vae_tiling.plan(vae, shape, TileSettings(memory_mb=1 << 20), device="cuda").chunk
    assert on_gpu(wan_vae, shape) == 2 and on_gpu(wan_vae, (16, 21, 8, 8)) == 8   # enough work per call
    small = vae_tiling.plan(wan_vae, (16, 65, 16, 16), TileSettings(memory_mb=1 << 20))   # 257 frames at 128 px
    assert small.chunk == 1 and small.num_tiles(16, 16) == 1     # on the CPU from 64 px up: one latent frame
    assert vae_tiling.plan(wan_vae, (0, 65, 16, 16), TileSettings(memory_mb=1 << 20), encode=True).chunk == 1
    assert vae_tiling.plan(wan_vae, (16, 65, 4, 4), TileSettings(memory_mb=1 << 20)).chunk == 4    # 32 px: 16 frames
    short = vae_tiling.plan(wan_vae, (16, 5, 16, 16), TileSettings(memory_mb=1 << 20))
    assert short.chunk == small.chunk and short.estimate_mb == small.estimate_mb  # the same calls: flat memory
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                            # short of memory: tested below
        tight = vae_tiling.plan(wan_vae, shape, TileSettings(memory_mb=64))
    assert tight.num_tiles(60, 104) > 1 and tight.chunk >= 1
    assert vae_tiling.plan(wan_vae, shape, TileSettings(memory_mb=1 << 20, tile_px=256)).tile_h == 32
    assert vae_tiling.plan(sd_vae, (4, 64, 64, 64), TileSettings(memory_mb=1 << 20)).num_tiles(64, 64) == 1
    assert on_gpu(sd_vae, (4, 64, 256, 256)) == 8                                     # 8 frames of 512x512
    assert vae_tiling.memory_budget(torch.device("cpu")) <= vae_tiling.CPU_BUDGET_MB << 20
    # from the installed RAM, not the RAM free at the moment: the plan, and so the pixels, must not follow the load
    assert vae_tiling.memory_budget(torch.device("cpu")) == min(vae_tiling.CPU_BUDGET_MB << 20, vae_tiling._total_ram() // 4)
    assert vae_tiling._total_ram() <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert vae_tiling.memory_budget(torch.device("cpu"), 100) == 100 << 20
    with pytest.raises(ValueError, match="`memory_mb` must be between"):
        TileSettings(memory_mb=-1).check()


def _meta_wan21():
    """Wan 2.1's VAE at its real channel counts on the meta device: shapes only, for plans."""
    from diffusers import AutoencoderKLWan
    with torch.device("meta"):
        return AutoencoderKLWan(base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2)


def test_plan_goes_tile_by_tile_when_the_caches_do_not_fit():
    """Wan 2.1 at 832x480 on a 6 GB budget: the causal caches of all tiles (9.4 KB per output pixel, overlaps
    included) do not fit in the streaming order, but one tile's cache plus the clip's output (12 bytes per pixel
    per frame) does: tile by tile, large tiles, no warning. A long clip whose output is bigger than the caches
    streams again when the budget allows, and the plan never grows with the clip beyond its output."""
    vae = _meta_wan21()
    plans = {}
    for frames in (5, 81, 321):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plans[frames] = vae_tiling.plan(vae, (16, (frames - 1) // 4 + 1, 60, 104), TileSettings(memory_mb=6144),
                                            device="cpu")
        assert plans[frames].by_tile and plans[frames].estimate_mb <= 6144
        assert plans[frames].tile_h >= 24 and plans[frames].num_tiles(60, 104) <= 18
    clip_mb = lambda frames: frames * 832 * 480 * 12 / 2 ** 20
    assert plans[81].estimate_mb - plans[5].estimate_mb == pytest.approx(clip_mb(81) - clip_mb(5), rel=0.01)
    # decoding to a file, the clip waits on disk (spill_to): the same tiles at every length, the same estimate
    with vae_tiling.spill_to("."):
        spilled = [vae_tiling.plan(vae, (16, (n - 1) // 4 + 1, 60, 104), TileSettings(memory_mb=6144), device="cpu")
                   for n in (5, 81, 321, 1001)]
    assert all(p.by_tile and (p.tile_h, p.tile_w) == (plans[5].tile_h, plans[5].tile_w) for p in spilled)
    assert spilled[-1].estimate_mb == pytest.approx(spilled[0].estimate_mb, abs=1)
    assert spilled[0].estimate_mb < plans[5].estimate_mb
    # the streaming order at the same tiles and chunk (every tile's cache alive): over the budget, twice this
    p = plans[81]
    costs = vae_tiling._Costs(vae_tiling.vae_adapter(vae), torch.device("cpu"), 21, 60, 104, 6144 << 20, False)
    streaming = costs(p.tile_h, p.tile_w, p.chunk, p.overlap)[0] / 2 ** 20
    assert streaming > 6144 and streaming > 2 * p.estimate_mb
    # on the CPU the tiles stay within CPU_TILE_PX, fitted to the frame: 12 tiles of 208x256, each pair
    # overlapping by at least a quarter of the 256 px tile they were cut from
    assert (p.tile_h * 8, p.tile_w * 8, p.num_tiles(60, 104)) == (208, 256, 12)
    ys, xs = p.starts(60, 104)
    assert min(b - a for a, b in zip(ys, ys[1:])) <= p.tile_h - 8 and min(b - a for a, b in zip(xs, xs[1:])) <= p.tile_w - 8
    assert ys[-1] + p.tile_h == 60 and xs[-1] + p.tile_w == 104
    roomy = vae_tiling.plan(vae, (16, 251, 60, 104), TileSettings(memory_mb=16384), device="cpu")   # 1001 frames
    assert not roomy.by_tile and roomy.num_tiles(60, 104) > 1                    # the clip (4.6 GB) is not held
    # on a GPU short of memory for all caches: tile by tile instead of moving every cache to the CPU and back
    gpu = vae_tiling.plan(vae, (16, 21, 60, 104), TileSettings(memory_mb=8192), device="cuda")
    assert gpu.by_tile and not gpu.offload and gpu.estimate_mb <= 8192
    assert not vae_tiling.plan(vae, (16, 21, 60, 104), TileSettings(memory_mb=1 << 20), device="cuda").by_tile


def test_plan_short_of_memory_takes_large_tiles_and_names_the_budget():
    """321 frames of Wan 2.1 at 832x480 on a 1 GB budget: nothing fits (the clip's output alone is 1.5 GB, every
    tile's cache together is more). The plan takes large tiles near the least memory, not the smallest tiles,
    and the warning names the memory_mb that is enough."""
    vae = _meta_wan21()
    shape = (16, 81, 60, 104)
    with pytest.warns(UserWarning, match=r"832x480 needs about \d+ MB.*budget of 1024 MB.*set memory_mb") as rec:
        short = vae_tiling.plan(vae, shape, TileSettings(memory_mb=1024), device="cpu")
    assert f"at least {math.ceil(short.estimate_mb)}" in str(rec[0].message)
    assert short.chunk == 1 and short.estimate_mb > 1024
    # the least memory of any tile side, each tried alone: the choice is within SHORT_SLACK of it, and larger
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        each = [vae_tiling.plan(vae, shape, TileSettings(memory_mb=1024, tile_px=t * 8), device="cpu")
                for t in vae_tiling._tile_sizes(104, 0)]
    least = min(each, key=lambda p: p.estimate_mb)
    assert short.estimate_mb <= least.estimate_mb * vae_tiling.SHORT_SLACK
    assert short.tile_h > least.tile_h
    # the memory_mb the warning names is enough: the same plan, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        enough = vae_tiling.plan(vae, shape, TileSettings(memory_mb=math.ceil(short.estimate_mb)), device="cpu")
    assert (enough.tile_h, enough.tile_w, enough.chunk, enough.by_tile) == (short.tile_h, short.tile_w, short.chunk,
                                                                             short.by_tile)


def test_tile_by_tile_decode_and_encode_equal_the_streaming_order(wan_vae, monkeypatch, tmp_path):
    """The same tiles and chunks in the other order (each tile through the whole clip with its own cache): the
    same arithmetic, so the same frames and latents bit for bit, held in memory or spilled to a file; the joined
    frames are the clip tensor itself."""
    import dataclasses
    torch.manual_seed(0)
    z = torch.randn(1, 16, 4, 8, 12)                                                 # 13 frames of 64x96
    streaming = vae_tiling.TilePlan(chunk=2, tile_h=5, tile_w=7, overlap=2)
    by_tile = dataclasses.replace(streaming, by_tile=True)
    a = list(vae_tiling.decode_chunks(wan_vae, z, tile_plan=streaming))
    b = list(vae_tiling.decode_chunks(wan_vae, z, tile_plan=by_tile))
    assert streaming.num_tiles(8, 12) == 4 and [c.shape[0] for c in a] == [c.shape[0] for c in b] == [1, 8, 4]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    joined = vae_tiling.join_chunks(b)
    assert joined.data_ptr() == b[0].data_ptr() and joined.shape == (13, 64, 96, 3)   # no copy
    assert torch.equal(vae_tiling.join_chunks(a), joined) and vae_tiling.join_chunks(a).data_ptr() != a[0].data_ptr()
    # spilled (decoding to a file): the clip waits in a temporary file of exactly its float32 size, the same frames
    files = []
    real_tmp = vae_tiling.tempfile.TemporaryFile
    monkeypatch.setattr(vae_tiling.tempfile, "TemporaryFile", lambda **kw: files.append(real_tmp(**kw)) or files[-1])
    with vae_tiling.spill_to(tmp_path):
        gen = vae_tiling.decode_chunks(wan_vae, z, tile_plan=by_tile)
        c = [next(gen)]
        assert len(files) == 1 and os.fstat(files[0].fileno()).st_size == 13 * 64 * 96 * 3 * 4 and not files[0].closed
        c += list(gen)
    assert files[0].closed and not list(tmp_path.iterdir())                 # anonymous, closed: nothing left
    assert all(torch.equal(x, y) for x, y in zip(a, c)) and len(c) == 3
    rows = vae_tiling.TilePlan(chunk=2, tile_h=5, tile_w=12, overlap=2)       # tiles as wide as the frame: one I/O
    with vae_tiling.spill_to(tmp_path):                                       # per frame, not per row
        d = list(vae_tiling.decode_chunks(wan_vae, z, tile_plan=dataclasses.replace(rows, by_tile=True)))
    assert len(files) == 2 and rows.num_tiles(8, 12) == 2
    assert torch.equal(torch.cat(d), torch.cat(list(vae_tiling.decode_chunks(wan_vae, z, tile_plan=rows))))
    monkeypatch.undo()
    # encode: force the order through the plan the encoder gets
    frames = vae_tiling.decode(wan_vae, z, BIG)
    real_plan, orders = vae_tiling.plan, []

    def plan(*args, **kwargs):
        tp = dataclasses.replace(real_plan(*args, **kwargs), chunk=2, by_tile=orders[-1])
        assert tp.num_tiles(8, 12) > 1
        return tp
    monkeypatch.setattr(vae_tiling, "plan", plan)
    settings = TileSettings(memory_mb=1 << 20, tile_px=48, overlap_px=16)
    latents = []
    for order in (False, True):
        orders.append(order)
        latents.append(vae_tiling.encode(wan_vae, frames, settings))
    assert latents[0].shape == (1, 16, 4, 8, 12) and torch.equal(latents[0], latents[1])


def test_tile_by_tile_file_decode_reports_progress_and_stops(wan_vae, tmp_path, monkeypatch):
    """Tile by tile, frames come only at the end: the progress follows the VAE calls (never backwards), and the
    host's stop is seen between calls, leaving no file. The clip waits in a temporary file beside the video, or in
    memory (with a warning) where that disk is short."""
    import dataclasses
    from kinema.models import interrupts
    monkeypatch.setattr(vae_tiling, "plan", lambda *a, **k: vae_tiling.TilePlan(2, 5, 7, 2, by_tile=True))

    class Model:                                 # the family side of decode_to_file: latents -> chunks
        latent_channels = 16
        pixel_frames = staticmethod(lambda f: 1 + 4 * (f - 1))
        decode_chunks = staticmethod(lambda latents, settings: vae_tiling.decode_chunks(wan_vae, latents, settings))

    z = torch.randn(1, 16, 4, 8, 12)
    seen = []
    path = vae_tiling.decode_to_file(Model(), z, tmp_path / "a.mp4", 8, on_frames=lambda d, t: seen.append((d, t)))
    assert path.is_file() and media.read_video_info(path).frames == 13
    assert len(seen) == 4 * 3 + 3 and seen == sorted(seen) and seen[-1] == (13, 13)    # 12 calls, 3 chunks
    assert seen[10][0] < 13                                                             # before the last call: not done
    calls = []

    def stop():
        calls.append(1)
        if len(calls) == 5:
            raise InterruptedError("stop")
    with interrupts.checking(stop), pytest.raises(InterruptedError):
        vae_tiling.decode_to_file(Model(), z, tmp_path / "b.mp4", 8)
    assert len(calls) == 5 and not list(tmp_path.glob("b*"))
    # the clip waits in a file beside the video; where that disk is short, in memory, with a warning naming it
    Usage = collections.namedtuple("Usage", "total used free")
    monkeypatch.setattr(vae_tiling.shutil, "disk_usage", lambda p: Usage(1 << 30, 1 << 30, 100 << 20))
    with pytest.warns(UserWarning, match=r"has 100 MB free, not the 1 MB \(\+ 256 MB spare\).*keeping it in memory"):
        path = vae_tiling.decode_to_file(Model(), z, tmp_path / "c.mp4", 8)
    assert media.read_video_info(path).frames == 13 and sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4",
                                                                                                    "c.mp4"]


def test_short_of_memory_choice():
    plans = [vae_tiling.TilePlan(1, t, t, t // 4, estimate_mb=mb) for t, mb in ((60, 20000), (32, 9000), (24, 7700),
                                                                                 (16, 7000), (8, 6500))]
    assert vae_tiling.short_of_memory(plans).tile_h == 24                         # 7700 <= 1.25 x 6500
    assert vae_tiling.short_of_memory(plans[:1]).tile_h == 60                      # a user's tile: the only one
    assert vae_tiling.short_of_memory(plans[3:]).tile_h == 16


# ---- latents files --------------------------------------------------------------------------------------------

def test_latents_file_round_trip(tmp_path):
    latents = torch.randn(1, 16, 3, 4, 4)
    info = vae_tiling.LatentsInfo(family="wan", model="fixture-wan-t2v", frames=9, fps=16.0, format="mp4",
                           tags={"prompt": "{}"})
    audio = {"waveform": torch.rand(1, 2, 800), "sample_rate": 8000}
    path = vae_tiling.save_latents(tmp_path / "v_00001_.latents.safetensors", latents, info, audio)
    got, got_info, got_audio = vae_tiling.load_latents(path)
    assert torch.equal(got, latents) and got_info == info
    assert torch.equal(got_audio["waveform"], audio["waveform"]) and got_audio["sample_rate"] == 8000
    assert vae_tiling.latents_path_for(tmp_path / "v_00001_.mp4") == path
    assert vae_tiling.video_path_for(path, "webm") == tmp_path / "v_00001_.webm"
    from safetensors.torch import save_file
    save_file({"x": latents}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="`latents` must be a Kinema latents file"):
        vae_tiling.load_latents(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError):
        vae_tiling.load_latents(tmp_path / "missing.latents.safetensors")


# ---- the streaming writer -------------------------------------------------------------------------------------

def _clip(n, h=32, w=48):
    t = torch.arange(n)[:, None, None, None].float()
    y = torch.linspace(0, 1, h)[None, :, None, None]
    x = torch.linspace(0, 1, w)[None, None, :, None]
    return torch.cat([((x + t / n) % 1).expand(n, h, w, 1), y.expand(n, h, w, 1), (t / n).expand(n, h, w, 1)], dim=-1)


@pytest.mark.parametrize("fmt", ["mp4", "webp"])
def test_video_writer_chunks_equal_one_shot(tmp_path, fmt):
    frames = _clip(11)
    one = media.save_video(frames, tmp_path / f"one.{fmt}", 16, fmt)
    with media.VideoWriter(tmp_path / f"chunked.{fmt}", 16, fmt) as out:
        for part in frames.split(4):
            out.write(part)
            assert not (tmp_path / f"chunked.{fmt}").exists()                         # only when complete
    assert out.frames == 11
    assert (tmp_path / f"chunked.{fmt}").read_bytes() == one.read_bytes()


def test_video_writer_audio_and_failures(tmp_path):
    sr, frames = 16000, _clip(10)
    audio = {"waveform": 0.2 * torch.sin(torch.arange(sr * 3) / 5.0)[None, None], "sample_rate": sr}
    with media.VideoWriter(tmp_path / "a.mp4", 8, "mp4", audio=audio) as out:
        for part in frames.split(3):
            out.write(part)
    info = media.read_video_info(tmp_path / "a.mp4")
    assert info.frames == 10 and abs(info.audio.duration - 10 / 8) < 1 / 8             # trimmed to the frames
    with pytest.raises(RuntimeError, match="decode failed"):
        with media.VideoWriter(tmp_path / "b.mp4", 8, "mp4") as out:
            out.write(frames[:4])
            raise RuntimeError("decode failed")
    with pytest.raises(ValueError, match="`images` must keep the size of the first chunk"):
        with media.VideoWriter(tmp_path / "c.webm", 8, "webm") as out:
            out.write(frames[:2])
            out.write(_clip(2, 16, 16))
    with pytest.raises(ValueError, match="`images` must hold at least one frame"):
        with media.VideoWriter(tmp_path / "d.gif", 8, "gif"):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4"]                  # nothing half-written
