"""Tiled, streaming encode and decode through a video VAE, and crash-safe decoding to a file.

Time. Wan's VAE (AutoencoderKLWan) is causal: latent frame 0 decodes to 1 frame, every later latent frame to 4,
and each causal convolution looks back 2 frames. We decode latent frame 0 alone, then chunks of n latent frames
(-> 4n frames), carrying the decoder's feature cache (the last 2 frames of every causal convolution's input) from
chunk to chunk, exactly as diffusers' own decode does one latent frame at a time. So cutting in time is exact
(float rounding only): no frame is decoded twice, nothing is blended, and causality is kept. Encoding mirrors it:
frame 0 alone, then chunks of 4n frames. A per-frame VAE (AnimateDiff's SD VAE) decodes frames independently:
its chunks are exact too.

Space. Large frames are cut into overlapping tiles, each decoded on its own (for Wan with its own causal cache), and
blended with linear cross-fades over the overlap. Two orders: streaming (time outer, tiles inner: every tile's cache
lives for the whole clip, frames come out chunk by chunk) when all the caches fit, else tile by tile (tiles outer,
time inner: one cache alive at a time, the whole clip's blended output held until the last tile, float32: on the
CPU, or when decoding to a file in an anonymous temporary file beside it, so that memory stays flat with the
clip's length). Both do the same arithmetic, so their pixels are the same bit for bit. On a GPU short of memory for
all the caches, tile by tile replaces keeping each cache on the CPU between chunks when the clip is smaller (or
spilled). Tiling is not exact: the VAEs' convolutions see across tile borders and their middle attention sees the
whole frame. tests/models/test_vae_tiling.py measures the error against the untiled decode.

Memory. `plan()` picks the largest tile (the whole frame when it fits; once the frame must be tiled, on the CPU
at most CPU_TILE_PX, and automatic tiles shrunk to the least size that needs no more tiles), then a chunk long
enough to keep the device busy (small clips decode in one call), streaming before tile by tile, whose estimated
working set fits a budget: TileSettings.memory_mb, else the free CUDA memory, else a quarter of the installed RAM
(at most 8 GB) on the CPU: not the RAM free at the moment, so that the same decode on the same machine is cut the
same way (tiles change the pixels; chunks change them by float rounding). The estimate is bytes per output pixel:
the causal cache is measured exactly by a tiny probe decode; activations use a per-architecture factor measured
on the real Wan 2.1 and SD VAEs (see ACT_FACTOR).

Streaming. `decode_chunks()` yields (n, H, W, 3) frames chunk by chunk; `decode_to_file()` feeds them straight into
media.VideoWriter, so a long video never sits in memory as one tensor (tile by tile: its blended output waits in a
temporary file, spill_to()), and the file appears only when it is complete. Between VAE calls the host's stop is
checked and decode_to_file reports progress. `decode_and_save()` first saves the latents (safetensors + JSON
metadata) beside the video, so a failed decode can be resumed with the Load Latent node or `kinema decode LATENTS`.

Plain torch + diffusers: nothing here imports ComfyUI, the nodes or a host.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import warnings
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from contextvars import ContextVar
from typing import Any, Callable, Iterable, Iterator

import torch

from . import interrupts
from .checks import check_frames, check_range, fail
from .heap import trim_heap

LATENTS_SUFFIX = ".latents.safetensors"
LATENTS_FORMAT = 1
CPU_BUDGET_MB = 8192          # at most this much RAM by default on the CPU (and at most a quarter of the RAM)
MIN_TILE = 8                  # latent cells: smaller tiles cost more in seams than they save in memory
MAX_CHUNK = {"causal": 8, "frame": 16}   # latent frames per call: Wan 8 (32 frames), per-frame VAEs 16 frames
GPU_CALL_PX = 1 << 21         # output pixels x frames that keep a GPU busy in one call (8 frames of 512x512)
CPU_CALL_PX = {"causal": 1 << 14, "frame": 1 << 18}   # on the CPU: calls up to this many output px x frames.
                              # Wan: measured CPU time of one call of n latent frames / n calls of one (thread
                              # time, one thread, real channel counts): 0.50-0.68 at 32 px (n = 8), 1.2 at 64 px
                              # (n = 8), 1.14 at 128 px (n = 4): past 16 frames of 32x32 the activations leave the
                              # caches and longer calls cost more than the calls they save, so 64 px and up decode
                              # one latent frame per call (as diffusers does). Per-frame VAEs: not yet measured.
CPU_TILE_PX = 1 << 16         # on the CPU, when the frame must be tiled, tiles of at most this many pixels (256x256,
                              # diffusers' own tile): past CPU_CALL_PX per call, larger tiles only cost memory
SHORT_SLACK = 1.25            # over the budget anyway: the largest tile within this factor of the least memory
SPILL_SPARE = 256 << 20       # spill a tile-by-tile clip only where this much disk stays free beside it
TRIM_BYTES = 16 << 20         # give freed heap pages back to the OS only after chunks at least this large
# Peak activation bytes of one decode call per output pixel per output frame, in units of (channels at full
# resolution x dtype bytes). Measured from the peak RSS of single decode calls on the CPU, fresh processes, random
# weights: the real Wan 2.1 VAE (96 channels) 24 at 128 px x 4 frames, 28 at 128 px x 8, 35 at 64 px; the SD 1.5
# VAE (128 channels) 28 at 256 px, 38 at 128 px (small calls carry more allocator overhead). Rounded up for the
# sizes where memory matters. Not yet measured on CUDA, where the caching allocator packs differently.
ACT_FACTOR = {"causal": 32.0, "frame": 36.0}
ENCODE_FACTOR = 0.5           # encoders keep fewer full-resolution activations alive than decoders


# ---------------------------------------------------------------------------------------------------------------
# Settings and plans
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TileSettings:
    """What a user may set; 0 = automatic."""
    memory_mb: int = 0       # working memory for the VAE (not counting its weights); 0: free CUDA memory, or on the
                             # CPU a quarter of the RAM (at most CPU_BUDGET_MB)
    tile_px: int = 0         # spatial tile side in pixels (rounded down to whole latent cells); 0: from the budget,
                             # the whole frame when it fits
    overlap_px: int = 0      # pixels shared by neighbouring tiles; 0: a quarter of the tile
    chunk_frames: int = 0    # latent frames per VAE call (after Wan's first, which goes alone); 0: the largest call
                             # that fits the budget, up to GPU_CALL_PX / CPU_CALL_PX output pixels x frames

    def check(self) -> None:
        check_range("memory_mb", self.memory_mb, 0, 1 << 24, "Use 0 for automatic, or the MB the VAE may use.")
        check_range("tile_size", self.tile_px, 0, 1 << 16, "Use 0 for automatic, or a tile side in pixels.")
        check_range("tile_overlap", self.overlap_px, 0, 1 << 16, "Use 0 for automatic, or pixels of overlap.")
        check_range("chunk_frames", self.chunk_frames, 0, 1 << 16, "Use 0 for automatic.")


@dataclass(frozen=True)
class TilePlan:
    """How one decode or encode is cut. Sizes in latent cells and latent frames."""
    chunk: int               # latent frames per call (Wan's latent frame 0 always goes alone first)
    tile_h: int              # latent rows per tile (>= the latent height: one tile row)
    tile_w: int              # latent columns per tile
    overlap: int             # latent cells shared by neighbouring tiles
    offload: bool = False    # keep each tile's causal cache on the CPU between chunks
    estimate_mb: float = 0.0 # estimated working memory of one call (for logs and tests)
    by_tile: bool = False    # tile by tile: each tile through the whole clip with its own causal cache, blended
                             # into the clip's output on the CPU; frames come out when the last tile is done

    def starts(self, h: int, w: int) -> tuple[list[int], list[int]]:
        """Tile origins along the height and the width, evenly spread, first at 0 and last at the edge."""
        return _starts(h, self.tile_h, self.overlap), _starts(w, self.tile_w, self.overlap)

    def num_tiles(self, h: int, w: int) -> int:
        ys, xs = self.starts(h, w)
        return len(ys) * len(xs)


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if tile >= size:
        return [0]
    n = math.ceil((size - overlap) / max(tile - overlap, 1))          # fewest tiles with at least `overlap`
    return [round(k * (size - tile) / (n - 1)) for k in range(n)]


def memory_budget(device: torch.device, memory_mb: int = 0) -> int:
    """Bytes the VAE may use for activations and caches: memory_mb when > 0, else 90 % of the free CUDA memory,
    else on the CPU (and MPS) a quarter of the machine's RAM, at most CPU_BUDGET_MB.

    On the CPU this is the installed RAM (or the container's limit), not the RAM free at the moment: the plan
    (tiles, chunks) follows the budget and changes the pixels, so it must not change with the machine's load."""
    if memory_mb > 0:
        return int(memory_mb) << 20
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.9)
    return int(min(CPU_BUDGET_MB << 20, _total_ram() // 4))


def _total_ram() -> int:
    """Bytes of RAM of this machine (Linux MemTotal, lowered to a cgroup memory limit; elsewhere the physical pages,
    else 16 GB)."""
    sizes = []
    for path, scale in (("/proc/meminfo", 1024), ("/sys/fs/cgroup/memory.max", 1),
                        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", 1)):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if path == "/proc/meminfo":
            text = next((line.split()[1] for line in text.splitlines() if line.startswith("MemTotal:")), "")
        if text.strip().isdigit():
            sizes.append(int(text) * scale)
    if sizes:
        return min(sizes)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


# ---------------------------------------------------------------------------------------------------------------
# The two kinds of VAE
# ---------------------------------------------------------------------------------------------------------------

class _CausalVAE:
    """Wan's AutoencoderKLWan driven chunk by chunk with explicit per-tile feature caches."""
    kind = "causal"

    def __init__(self, vae):
        from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d
        self.vae = vae
        cfg = vae.config
        self.patch = cfg.patch_size or 1
        self.spatial = int(cfg.scale_factor_spatial)                    # pixels per latent cell (8; 16 for 2.2)
        self.temporal = int(cfg.scale_factor_temporal)                  # frames per latent frame after the first
        self.z_dim = cfg.z_dim
        self.n_dec = sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        self.n_enc = sum(isinstance(m, WanCausalConv3d) for m in vae.encoder.modules())
        base = cfg.decoder_base_dim or cfg.base_dim
        self.width = base * cfg.dim_mult[0] // self.patch ** 2          # channels at full resolution

    def out_frames(self, first: bool, n: int) -> int:
        return 1 + self.temporal * (n - 1) if first else self.temporal * n

    def new_cache(self, encode: bool = False) -> list:
        return [None] * (self.n_enc if encode else self.n_dec)

    def decode(self, z: torch.Tensor, cache: list, first: bool) -> torch.Tensor:
        """z (1, C, n, h, w) VAE latents -> (1, 3, F, H, W) pixels -1..1; cache carries the causal state."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify
        x = self.vae.post_quant_conv(z)                                  # 1x1x1 conv: no state
        if first and z.shape[2] > 1:                                     # latent frame 0 must go alone
            out = [self.vae.decoder(x[:, :, :1], feat_cache=cache, feat_idx=[0], first_chunk=True),
                   self.vae.decoder(x[:, :, 1:], feat_cache=cache, feat_idx=[0])]
            out = torch.cat(out, dim=2)
        else:
            out = self.vae.decoder(x, feat_cache=cache, feat_idx=[0], first_chunk=first)
        return unpatchify(out, self.patch).clamp(-1, 1)                  # (1, 3, F, H, W)

    def encode(self, x: torch.Tensor, cache: list, first: bool) -> torch.Tensor:
        """x (1, 3, F, H, W) -1..1 (F = 1 + 4k when first, else 4k) -> latent means (1, C, f, h, w)."""
        from diffusers.models.autoencoders.autoencoder_kl_wan import patchify
        x = patchify(x, self.patch)
        if first and x.shape[2] > 1:
            out = torch.cat([self.vae.encoder(x[:, :, :1], feat_cache=cache, feat_idx=[0]),
                             self.vae.encoder(x[:, :, 1:], feat_cache=cache, feat_idx=[0])], dim=2)
        else:
            out = self.vae.encoder(x, feat_cache=cache, feat_idx=[0])
        return self.vae.quant_conv(out)[:, :self.z_dim]                  # mean of the posterior


class _FrameVAE:
    """A per-frame image VAE (diffusers AutoencoderKL: AnimateDiff's SD 1.5 VAE)."""
    kind = "frame"
    temporal = 1

    def __init__(self, vae):
        self.vae = vae
        cfg = vae.config
        self.spatial = 2 ** (len(cfg.block_out_channels) - 1)
        self.width = cfg.block_out_channels[0]                          # channels at full resolution

    def out_frames(self, first: bool, n: int) -> int:
        return n

    def new_cache(self, encode: bool = False) -> None:
        return None

    def decode(self, z: torch.Tensor, cache, first: bool) -> torch.Tensor:
        """z (1, C, n, h, w) VAE latents -> (1, 3, n, H, W) pixels."""
        frames = z[0].transpose(0, 1)                                    # (n, C, h, w)
        out = self.vae.decode(frames).sample                             # (n, 3, H, W)
        return out.transpose(0, 1).unsqueeze(0)                          # (1, 3, n, H, W)

    def encode(self, x: torch.Tensor, cache, first: bool) -> torch.Tensor:
        """x (1, 3, n, H, W) -1..1 -> latent means (1, C, n, h, w)."""
        frames = x[0].transpose(0, 1)                                    # (n, 3, H, W)
        z = self.vae.encode(frames).latent_dist.mode()                   # (n, C, h, w)
        return z.transpose(0, 1).unsqueeze(0)                           # (1, C, n, h, w)


def vae_adapter(vae):
    """The chunk/tile driver for a diffusers VAE: causal (Wan) or per frame (AutoencoderKL)."""
    name = type(vae).__name__
    if name == "AutoencoderKLWan":
        return _CausalVAE(vae)
    if name in ("AutoencoderKL", "AsymmetricAutoencoderKL"):
        return _FrameVAE(vae)
    fail("model", "has a VAE Kinema cannot tile", name, "Use a Wan or AnimateDiff model, or report the family.")


_CACHE_COST: "weakref.WeakKeyDictionary[Any, float]" = weakref.WeakKeyDictionary()


def _cache_bytes_per_px(ad) -> float:
    """Causal cache bytes per output pixel, measured exactly on a 2x2-cell probe (it scales with the area). The
    probe runs on a copy of the VAE on the meta device: shapes only, no weights touched, no time spent."""
    if ad.kind != "causal":
        return 0.0
    if ad.vae not in _CACHE_COST:
        dbytes = next(ad.vae.parameters()).element_size()
        with torch.device("meta"):
            probe = _CausalVAE(type(ad.vae).from_config(ad.vae.config))
        z = torch.zeros(1, ad.z_dim, 2, 2, 2, device="meta")
        cache = probe.new_cache()
        with torch.no_grad():
            probe.decode(z[:, :, :1], cache, first=True)
            probe.decode(z[:, :, 1:], cache, first=False)
        total = sum(c.numel() * dbytes for c in cache if isinstance(c, torch.Tensor))
        _CACHE_COST[ad.vae] = total / (2 * ad.spatial) ** 2
    return _CACHE_COST[ad.vae]


class _Costs:
    """Working-memory estimates (bytes) of the calls of one decode or encode of latents (f, h, w)."""

    def __init__(self, ad, device: torch.device, f: int, h: int, w: int, budget: int, encode: bool,
                 spill: bool = False):
        dbytes = next(ad.vae.parameters()).element_size()
        self.ad, self.device, self.f, self.h, self.w, self.budget = ad, device, f, h, w, budget
        self.r, self.causal = ad.spatial, ad.kind == "causal"
        self.act = ACT_FACTOR[ad.kind] * ad.width * dbytes * (ENCODE_FACTOR if encode else 1.0)  # B / px / frame
        self.cache = _cache_bytes_per_px(ad)  # bytes / px (the encoder's causal cache is of the same order)
        # what tile by tile holds for the whole clip, on the CPU: the blended output (float32; on disk when
        # spilled) and its weights
        px = h * w * self.r ** 2
        self.spill = spill and self.causal and not encode
        out = (ad.z_dim * f * h * w if encode else ad.out_frames(True, f) * px * 3) if self.causal else 0
        self.clip = (0 if self.spill else out * 4) + px * 4

    def tiles(self, th: int, tw: int, overlap: int) -> int:
        return len(_starts(self.h, th, overlap)) * len(_starts(self.w, tw, overlap))

    def all_caches(self, th: int, tw: int, overlap: int) -> float:
        """Every tile's causal cache: what the streaming order holds for the whole clip."""
        return self.cache * th * tw * self.r ** 2 * self.tiles(th, tw, overlap)

    def __call__(self, th: int, tw: int, chunk: int, overlap: int, short: bool = False,
                 by_tile: bool = False) -> tuple[float, bool]:
        """(bytes, offload) for one call of `chunk` latent frames on a th x tw tile; short: over the budget
        anyway, so on a GPU every tile's cache waits on the CPU; by_tile: tile by tile (one cache alive, the
        whole clip's output held until the end, on the CPU)."""
        px = th * tw * self.r ** 2
        n_out = self.ad.out_frames(False, max(1, min(chunk, self.f - self.causal)))
        all_cache = self.all_caches(th, tw, overlap)
        offload = (not by_tile and self.tiles(th, tw, overlap) > 1 and self.device.type == "cuda"
                   and (short or all_cache > self.budget / 2))
        held = self.cache * px if offload or by_tile else all_cache
        if self.device.type == "cuda":
            out = 0.0
        elif by_tile:     # the clip + one tile's output (spilled: + the clip's part it is added to, read back)
            out = self.clip + n_out * px * 3 * 4 * (3 if self.spill else 2)
        else:
            out = n_out * self.h * self.w * self.r ** 2 * 3 * 4 * 2                     # output chunk + its blend
        return self.act * px * n_out + held + out, offload

    def plan(self, chunk: int, th: int, tw: int, overlap: int, short: bool = False, by_tile: bool = False):
        need, offload = self(th, tw, chunk, overlap, short, by_tile)
        if offload and self.clip <= self.all_caches(th, tw, overlap):   # the clip is smaller than the caches:
            by_tile, offload = True, False                              # hold it, not them, on the CPU
        return TilePlan(chunk, th, tw, overlap, offload, need / 2 ** 20, by_tile)


def plan(vae, latent_shape: tuple[int, ...], settings: TileSettings | None = None, device=None,
         encode: bool = False) -> TilePlan:
    """Choose tiles and chunks for one decode (or encode) of latents (C, f, h, w) within the memory budget.

    The largest tile wins (the whole frame when it fits: no seams), then the longest chunk up to what keeps the
    device busy (GPU_CALL_PX, CPU_CALL_PX; at most MAX_CHUNK): small clips decode in one call. A causal VAE's
    tiles stream (all tiles chunk by chunk, every tile's cache alive) when that fits, else go tile by tile (one
    cache alive, the clip's output held on the CPU until the end).
    When no tile fits even with one latent frame per call, short_of_memory() picks the largest tile within
    SHORT_SLACK of the least memory there is, with a warning naming the memory_mb to set."""
    settings = settings or TileSettings()
    settings.check()
    ad = vae if isinstance(vae, (_CausalVAE, _FrameVAE)) else vae_adapter(vae)
    device = torch.device(device) if device is not None else next(ad.vae.parameters()).device
    _, f, h, w = latent_shape
    r = ad.spatial
    cost = _Costs(ad, device, f, h, w, memory_budget(device, settings.memory_mb), encode, _SPILL.get() is not None)
    gpu = device.type in ("cuda", "mps")
    tried = []                                # per tile side, largest first: its plan with the shortest chunk
    for t in _tile_sizes(max(h, w), settings.tile_px // r if settings.tile_px else 0):
        th, tw = min(t, h), min(t, w)
        overlap = (settings.overlap_px // r) if settings.overlap_px else max(1, min(th, tw) // 4)
        overlap = min(overlap, max(min(th, tw) - 1, 0))
        if not settings.tile_px:              # as small as the same number of tiles allows: less work per tile
            th, tw = _fit(h, th, overlap), _fit(w, tw, overlap)
            if not gpu and (th, tw) != (h, w) and th * tw * r * r > CPU_TILE_PX:
                continue                      # on the CPU, tiles this large are no faster, only hungrier
        per_frame = th * tw * r * r * ad.out_frames(False, 1)                 # output px x frames per latent frame
        call_px = GPU_CALL_PX if gpu else CPU_CALL_PX[ad.kind]
        want = min(MAX_CHUNK[ad.kind], math.ceil(call_px / per_frame))
        chunks = [settings.chunk_frames] if settings.chunk_frames else list(range(want, 0, -1))
        orders = [False, True] if cost.causal and cost.tiles(th, tw, overlap) > 1 else [False]   # streaming first
        for by_tile in orders:
            for chunk in chunks:
                if cost(th, tw, chunk, overlap, by_tile=by_tile)[0] <= cost.budget:
                    return cost.plan(chunk, th, tw, overlap, by_tile=by_tile)
        tried.append(min((cost.plan(chunks[-1], th, tw, overlap, True, bt) for bt in orders),
                         key=lambda tp: tp.estimate_mb))
    best = short_of_memory(tried)
    warnings.warn(f"VAE {'encode' if encode else 'decode'} at {w * r}x{h * r} needs about "
                  f"{math.ceil(best.estimate_mb)} MB of working memory, more than its budget of "
                  f"{cost.budget >> 20} MB: running anyway ({best.num_tiles(h, w)} tiles of {best.tile_w * r}x"
                  f"{best.tile_h * r} px, {best.chunk} latent frame(s) per call), it may run out of memory. Fix: set "
                  f"memory_mb on Tiled VAE Options to at least {math.ceil(best.estimate_mb)} if the machine has it, "
                  f"or lower the resolution.", stacklevel=2)
    return best


def short_of_memory(tried: list[TilePlan]) -> TilePlan:
    """The plan when no tile fits the budget, from each tile side's plan with its shortest chunk (largest tile
    first): the largest tile whose estimate is within SHORT_SLACK of the least estimate of all.

    Below some size, smaller tiles stop saving memory: the causal caches of all tiles (streaming), or the clip's
    output held tile by tile, are floors that tiling does not lower, while the calls multiply. Taking the smallest
    tile once decoded Wan 2.1 at 832x480 on a 6 GB budget in 170 tiles of 64 px (estimate 6.5 GB, peak 11.4 GB).
    321 frames at 832x480 on 1 GB: 66 tiles of 104 px, tile by tile (estimate 2.1 GB; the clip alone is 1.5)."""
    least = min(p.estimate_mb for p in tried)
    return next(p for p in tried if p.estimate_mb <= least * SHORT_SLACK)


def _fit(size: int, tile: int, overlap: int) -> int:
    """The smallest tile that covers `size` with as many tiles as `tile` needs, still overlapping by `overlap`:
    e.g. 480 px in tiles of 256 px overlapping by 64 takes 3 tiles, and 3 tiles of 208 px do it."""
    n = len(_starts(size, tile, overlap))
    return tile if n == 1 else math.ceil((size + (n - 1) * overlap) / n)


def _tile_sizes(largest: int, fixed: int) -> list[int]:
    """Tile sides to try, largest first: the user's one, else the whole frame shrinking by 3/4 to MIN_TILE."""
    if fixed:
        return [max(1, fixed)]
    sizes = [largest]
    while sizes[-1] > MIN_TILE:
        sizes.append(max(MIN_TILE, int(sizes[-1] * 0.75)))
    return sizes


# ---------------------------------------------------------------------------------------------------------------
# Blending
# ---------------------------------------------------------------------------------------------------------------

def _ramps(starts: list[int], tile: int, scale: int) -> list[torch.Tensor]:
    """1-D blend weights per tile (in output units): linear cross-fades over each overlap with the neighbour,
    1 elsewhere. Neighbouring weights sum to 1 over an overlap; the blender still divides by the sum."""
    out = []
    for k, s in enumerate(starts):
        wgt = torch.ones(tile * scale)
        if k > 0:
            o = (starts[k - 1] + tile - s) * scale
            if o > 0:
                wgt[:o] = (torch.arange(o) + 0.5) / o
        if k + 1 < len(starts):
            o = (s + tile - starts[k + 1]) * scale
            if o > 0:
                wgt[-o:] = torch.minimum(wgt[-o:], 1 - (torch.arange(o) + 0.5) / o)
        out.append(wgt)
    return out


class _Blender:
    """Accumulates the weighted tiles of one chunk and returns their blend (1, C, n, H, W)."""

    def __init__(self, ys: list[int], xs: list[int], tile_h: int, tile_w: int, scale: int):
        self.ys, self.xs, self.scale = ys, xs, scale
        self.size = ((ys[-1] + tile_h) * scale, (xs[-1] + tile_w) * scale)     # the last tiles end at the edges
        self.wy, self.wx = _ramps(ys, tile_h, scale), _ramps(xs, tile_w, scale)
        self.acc: torch.Tensor | None = None
        self.wsum: torch.Tensor | None = None

    def add(self, i: int, j: int, tile: torch.Tensor) -> None:
        """Tile (i, j) of the grid, (1, C, n, th*scale, tw*scale)."""
        if self.acc is None:
            self.acc = tile.new_zeros(*tile.shape[:-2], *self.size)                  # (1, C, n, H, W)
            self.wsum = tile.new_zeros(self.size)                                    # (H, W)
        y0, x0 = self.ys[i] * self.scale, self.xs[j] * self.scale
        hh, ww = tile.shape[-2:]
        wgt = (self.wy[i][:hh, None] * self.wx[j][None, :ww]).to(tile)               # (th, tw)
        self.acc[..., y0:y0 + hh, x0:x0 + ww] += tile * wgt
        self.wsum[y0:y0 + hh, x0:x0 + ww] += wgt

    def result(self) -> torch.Tensor:
        out = self.acc / self.wsum
        self.acc = self.wsum = None
        return out


def _over_tiles(tp: TilePlan, ys: list[int], xs: list[int], scale: int,
                run: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
    """run(i, j) on every tile of the grid and blend the outputs (scale output units per latent cell); a single
    tile is returned as it is."""
    if len(ys) == 1 and len(xs) == 1:
        return run(0, 0)
    blender = _Blender(ys, xs, tp.tile_h, tp.tile_w, scale)
    for i in range(len(ys)):
        for j in range(len(xs)):
            blender.add(i, j, run(i, j).float())
    return blender.result()


# ---------------------------------------------------------------------------------------------------------------
# Decode and encode
# ---------------------------------------------------------------------------------------------------------------

def _chunks(f: int, chunk: int, causal: bool) -> list[tuple[int, int, bool]]:
    """(start, stop, first) latent frame ranges: for a causal VAE frame 0 alone first, then `chunk` at a time."""
    out, i = [], 0
    if causal:
        out.append((0, 1, True))
        i = 1
    while i < f:
        out.append((i, min(i + chunk, f), i == 0))
        i += chunk
    return out


def _move(cache: list | None, device) -> None:
    """Move a causal cache's tensors (in place in the list) to `device`: off the GPU between a tile's chunks."""
    for k, c in enumerate(cache or []):
        if isinstance(c, torch.Tensor):
            cache[k] = c.to(device)


def decode_chunks(vae, z: torch.Tensor, settings: TileSettings | None = None,
                  tile_plan: TilePlan | None = None) -> Iterator[torch.Tensor]:
    """Decode VAE latents chunk by chunk: yields IMAGE chunks (n, H, W, 3) float32 0..1 on the CPU.

    Args:
        vae: a diffusers AutoencoderKLWan or AutoencoderKL (weights on their device).
        z: latents in the VAE's own space (already un-normalised by the family), (1, C, f, h, w).
        settings: memory budget and tile/chunk overrides; tile_plan: a ready plan (overrides settings).
    Frames come out in order; concatenated they are the whole clip (Wan: 1 + 4 (f - 1) frames). A tile-by-tile
    plan yields them only when the last tile is done (the same pixels, bit for bit).
    """
    ad = vae_adapter(vae)
    p = next(vae.parameters())
    _, _, f, h, w = z.shape
    tp = tile_plan or plan(ad, tuple(z.shape[1:]), settings)
    ys, xs = tp.starts(h, w)
    chunks = _chunks(f, tp.chunk, ad.kind == "causal")
    calls = _Calls(len(chunks) * len(ys) * len(xs))

    def run(i: int, j: int, a: int, b: int, first: bool, cache) -> torch.Tensor:
        zt = z[:, :, a:b, ys[i]:ys[i] + tp.tile_h, xs[j]:xs[j] + tp.tile_w]              # (1, C, n, th, tw)
        if tp.offload:
            _move(cache, p.device)
        out = ad.decode(zt.to(p.device, p.dtype), cache, first)                         # (1, 3, n_out, TH, TW)
        if tp.offload:
            _move(cache, "cpu")
        calls.done()
        return out

    if tp.by_tile:
        yield from _decode_by_tile(ad, tp, ys, xs, chunks, run)
        return
    caches = {(i, j): ad.new_cache() for i in range(len(ys)) for j in range(len(xs))}
    for a, b, first in chunks:
        # 1. every tile of latent frames a..b, each with its own causal cache, blended in pixel space
        with torch.no_grad():                     # not around the yield: grad mode is global to the caller
            video = _over_tiles(tp, ys, xs, ad.spatial, lambda i, j: run(i, j, a, b, first, caches[(i, j)]))
            # 2. to IMAGE frames on the CPU: -1..1 -> (n_out, H, W, 3) 0..1
            frames = (video[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).cpu()
        del video
        if p.device.type == "cpu" and frames.numel() * 4 >= TRIM_BYTES:
            trim_heap()
        yield frames


def _decode_by_tile(ad, tp: TilePlan, ys: list[int], xs: list[int], chunks: list[tuple[int, int, bool]],
                    run: Callable[..., torch.Tensor]) -> Iterator[torch.Tensor]:
    """Tile by tile: each tile through every chunk with its own causal cache (one alive at a time), blended into
    the whole clip (F, H, W, 3), in memory on the CPU or, inside spill_to(), in a temporary file; then the clip's
    frames, chunk by chunk (in memory: views of it). The same arithmetic as the streaming order, in another
    order: bit for bit the same frames."""
    r = ad.spatial
    n = sum(ad.out_frames(first, b - a) for a, b, first in chunks)
    with _Clip(n, (ys[-1] + tp.tile_h) * r, (xs[-1] + tp.tile_w) * r, _SPILL.get()) as clip:

        def add(tile: torch.Tensor, wgt: torch.Tensor, t0: int, y0: int, x0: int) -> None:
            clip.add(t0, y0, x0, (tile[0].permute(1, 2, 3, 0) * wgt[..., None]).cpu())   # tile (1, 3, n, hh, ww)

        with torch.no_grad():
            wsum = _by_tile(tp, ys, xs, r, chunks, ad.new_cache, run, add)              # (H, W)
        t0 = 0
        for a, b, first in chunks:
            k = ad.out_frames(first, b - a)
            yield clip.frames(t0, k, wsum)
            t0 += k


_SPILL: ContextVar[Path | None] = ContextVar("kinema_vae_spill", default=None)


@contextlib.contextmanager
def spill_to(folder) -> Iterator[None]:
    """Inside the block, a tile-by-tile decode keeps the clip's blended output in an anonymous temporary file in
    `folder` (gone when closed, even after a crash), not in memory: its memory no longer grows with the clip's
    length, and the planner counts it so. decode_to_file spills into the video's folder."""
    token = _SPILL.set(Path(folder))
    try:
        yield
    finally:
        _SPILL.reset(token)


class _Clip:
    """The blended output (F, H, W, 3) float32 of a tile-by-tile decode, before normalising: a tensor, or a
    temporary file in `folder` (when given and its disk has room) read and written by rows of tiles."""

    def __init__(self, n: int, h: int, w: int, folder: Path | None):
        self.shape, self.file, self.acc = (n, h, w, 3), None, None
        need = n * h * w * 12
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(folder).free
            if free >= need + SPILL_SPARE:
                self.file = tempfile.TemporaryFile(dir=folder, prefix=".kinema-decode-", buffering=0)
                self.file.truncate(need)                                   # zeros (sparse where the disk allows)
            else:
                warnings.warn(f"VAE decode: {folder} has {free >> 20} MB free, not the {(need >> 20) + 1} MB "
                              f"(+ {SPILL_SPARE >> 20} MB spare) to keep the {n}-frame clip's output there: "
                              f"keeping it in memory instead. Fix: free disk space there, or decode fewer "
                              f"frames at a time.", stacklevel=2)
        if self.file is None:
            self.acc = torch.zeros(self.shape)

    def __enter__(self) -> "_Clip":
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.close()
        self.file = self.acc = None

    def add(self, t0: int, y0: int, x0: int, part: torch.Tensor) -> None:
        """clip[t0:t0+k, y0:y0+hh, x0:x0+ww] += part (k, hh, ww, 3) float32 on the CPU."""
        k, hh, ww, _ = part.shape
        if self.acc is not None:
            self.acc[t0:t0 + k, y0:y0 + hh, x0:x0 + ww] += part
            return
        region = torch.empty(part.shape)                                   # contiguous, like the file
        self._rows(region, t0, y0, x0, write=False)
        region += part
        self._rows(region, t0, y0, x0, write=True)

    def _rows(self, region: torch.Tensor, t0: int, y0: int, x0: int, write: bool) -> None:
        """Read (or write) region (k, hh, ww, 3) at clip[t0, y0, x0] in the file: one I/O per frame when the
        region spans the width, else per row."""
        k, hh, ww, _ = region.shape
        _, h, w, _ = self.shape
        mv = memoryview(region.numpy()).cast("B")
        run = ww * 12 * (hh if ww == w else 1)                             # contiguous bytes in the file
        pos = 0
        for t in range(t0, t0 + k):
            for y in (range(y0, y0 + 1) if ww == w else range(y0, y0 + hh)):
                _file_io(self.file, mv[pos:pos + run], ((t * h + y) * w + x0) * 12, write)
                pos += run

    def frames(self, t0: int, k: int, wsum: torch.Tensor) -> torch.Tensor:
        """Frames t0..t0+k as IMAGE (k, H, W, 3) 0..1 (in memory: the first call normalises the whole clip in
        place, then views of it)."""
        if self.acc is not None:
            if t0 == 0:
                self.acc.div_(wsum[..., None]).div_(2).add_(0.5).clamp_(0, 1)      # -1..1 -> 0..1
            return self.acc[t0:t0 + k]
        _, h, w, _ = self.shape
        out = torch.empty(k, h, w, 3)
        _file_io(self.file, memoryview(out.numpy()).cast("B"), t0 * h * w * 12, write=False)
        return out.div_(wsum[..., None]).div_(2).add_(0.5).clamp_(0, 1)


def _file_io(f, mv: memoryview, offset: int, write: bool) -> None:
    """Read or write all of mv at offset in an unbuffered binary file (short reads and writes continued)."""
    f.seek(offset)
    done = 0
    while done < len(mv):
        k = f.write(mv[done:]) if write else f.readinto(mv[done:])
        if not k:
            raise OSError(f"VAE decode: the temporary clip file ended at byte {offset + done}")
        done += k


def _by_tile(tp: TilePlan, ys: list[int], xs: list[int], scale: int, chunks: list[tuple[int, int, bool]],
             new_cache: Callable[[], Any], run: Callable[..., torch.Tensor],
             add: Callable[[torch.Tensor, torch.Tensor, int, int, int], None]) -> torch.Tensor:
    """Every tile through all chunks, one tile (and one causal cache) at a time: add(output (1, C, n, hh, ww)
    float32, its blend weights (hh, ww), first frame, y0, x0) for each call. Returns the sum of the weights (H, W)."""
    wy, wx = _ramps(ys, tp.tile_h, scale), _ramps(xs, tp.tile_w, scale)
    wsum = torch.zeros((ys[-1] + tp.tile_h) * scale, (xs[-1] + tp.tile_w) * scale)
    for i in range(len(ys)):
        for j in range(len(xs)):
            cache, t0 = new_cache(), 0
            y0, x0 = ys[i] * scale, xs[j] * scale
            weights = wy[i][:, None] * wx[j][None, :]                                  # once per tile
            for a, b, first in chunks:
                tile = run(i, j, a, b, first, cache).float()                           # (1, C, n, hh, ww)
                hh, ww = tile.shape[-2:]
                wgt = weights[:hh, :ww].to(tile)                                       # (hh, ww)
                add(tile, wgt, t0, y0, x0)
                t0 += tile.shape[2]
                del tile
            wsum[y0:y0 + hh, x0:x0 + ww] += wgt.cpu()
            del cache
            trim_heap()
    return wsum


class _Calls:
    """Counts a decode's VAE calls: between them, the host's interrupt check and the work-progress hook."""

    def __init__(self, total: int):
        self.total, self.n = total, 0

    def done(self) -> None:
        self.n += 1
        interrupts.check()
        hook = _ON_CALL.get()
        if hook is not None:
            hook(self.n, self.total)


_ON_CALL: ContextVar[Callable[[int, int], None] | None] = ContextVar("kinema_vae_calls", default=None)


@contextlib.contextmanager
def calls_reported(fn: Callable[[int, int], None] | None) -> Iterator[None]:
    """Inside the block, every decode / encode VAE call here reports fn(calls done, calls in all) (may raise to
    stop): progress for a decode whose frames come only at the end (tile by tile)."""
    token = _ON_CALL.set(fn)
    try:
        yield
    finally:
        _ON_CALL.reset(token)


def decode(vae, z: torch.Tensor, settings: TileSettings | None = None) -> torch.Tensor:
    """All frames at once: (1, C, f, h, w) VAE latents -> IMAGE (F, H, W, 3) float32 0..1 on the CPU."""
    return join_chunks(decode_chunks(vae, z, settings))


def join_chunks(chunks: Iterable[torch.Tensor]) -> torch.Tensor:
    """IMAGE chunks as one (F, H, W, 3) tensor: torch.cat, except that the chunks of a tile-by-tile decode, which
    are consecutive views of one clip tensor, give that tensor back without a copy (half the peak)."""
    parts = list(chunks)
    base = parts[0]._base
    if base is not None and base.is_contiguous() and tuple(base.shape) == (sum(c.shape[0] for c in parts),
                                                                           *parts[0].shape[1:]):
        ptr = base.data_ptr()
        for c in parts:
            if c._base is not base or not c.is_contiguous() or c.data_ptr() != ptr:
                break
            ptr += c.numel() * c.element_size()
        else:
            return base
    return torch.cat(parts)


def encode(vae, frames: torch.Tensor, settings: TileSettings | None = None) -> torch.Tensor:
    """IMAGE frames (F, H, W, 3) 0..1 -> latent means in the VAE's own space (1, C, f, h, w) on the VAE's device,
    tiled and chunked like decode (Wan: F must be 4k+1; frame 0 alone, then 4 * chunk frames per call)."""
    ad = vae_adapter(vae)
    p = next(vae.parameters())
    n, hh, ww = frames.shape[:3]
    r, t = ad.spatial, ad.temporal
    if ad.kind == "causal":
        check_frames("images", n, t)
    for arg, size in (("height", hh), ("width", ww)):
        if size % r:
            fail(arg, f"must be a multiple of {r} to encode", size, f"Resize the frames to a multiple of {r}.")
    f = (n - 1) // t + 1 if ad.kind == "causal" else n
    h, w = hh // r, ww // r
    tp = plan(ad, (0, f, h, w), settings, encode=True)
    ys, xs = tp.starts(h, w)
    chunks = _chunks(f, tp.chunk, ad.kind == "causal")
    calls = _Calls(len(chunks) * len(ys) * len(xs))

    def run(i: int, j: int, a: int, b: int, first: bool, cache) -> torch.Tensor:
        # latent frames a..b come from pixel frames p0..p1 (Wan: 0 -> [0], k -> [4k-3 .. 4k])
        p0, p1 = (0 if a == 0 else 1 + t * (a - 1), 1 + t * (b - 1)) if ad.kind == "causal" else (a, b)
        y0, x0 = ys[i] * r, xs[j] * r
        x = frames[p0:p1, y0:y0 + tp.tile_h * r, x0:x0 + tp.tile_w * r, :3]             # (m, th, tw, 3)
        x = x.permute(3, 0, 1, 2).unsqueeze(0).to(p.device, p.dtype) * 2 - 1             # (1, 3, m, th, tw)
        if tp.offload:
            _move(cache, p.device)
        zt = ad.encode(x, cache, first)                                                 # (1, C, b-a, th/r, tw/r)
        if tp.offload:
            _move(cache, "cpu")
        calls.done()
        return zt

    with torch.no_grad():
        if tp.by_tile:                           # every tile through the whole clip, blended in latent space
            acc = torch.zeros(1, ad.z_dim, f, h, w)

            def add(tile: torch.Tensor, wgt: torch.Tensor, t0: int, y0: int, x0: int) -> None:
                acc[:, :, t0:t0 + tile.shape[2], y0:y0 + tile.shape[3], x0:x0 + tile.shape[4]] += (tile * wgt).cpu()

            wsum = _by_tile(tp, ys, xs, 1, chunks, lambda: ad.new_cache(encode=True), run, add)
            return (acc / wsum).to(p.device)
        caches = {(i, j): ad.new_cache(encode=True) for i in range(len(ys)) for j in range(len(xs))}
        out = [_over_tiles(tp, ys, xs, 1, lambda i, j: run(i, j, a, b, first, caches[(i, j)])).float()
               for a, b, first in chunks]
    return torch.cat(out, dim=2)                                                        # (1, C, f, h, w)


# ---------------------------------------------------------------------------------------------------------------
# Families: the model's chunked decode when it has one
# ---------------------------------------------------------------------------------------------------------------

def check_latents(model, samples) -> torch.Tensor:
    """LATENT samples (1, C, f, h, w) with this model's channel count."""
    if not isinstance(samples, torch.Tensor) or samples.ndim != 5:
        fail("latent", "must be a 5-D tensor (1, C, frames, h, w) of video latents",
             tuple(getattr(samples, "shape", ())), "Connect a Kinema Temporal Sampler, Video Encode or Load Latent.")
    if samples.shape[0] != 1:
        fail("latent", "must hold one clip (batch size 1)", tuple(samples.shape), "Pick one clip of the batch.")
    channels = model.latent_channels
    if samples.shape[1] != channels:
        fail("latent", f"must have the model's {channels} latent channels", samples.shape[1],
             "Decode with the model that made the latents (see the latents file's metadata).")
    return samples


def stream_decode(model, latents: torch.Tensor, settings: TileSettings | None = None) -> Iterator[torch.Tensor]:
    """IMAGE chunks (n, H, W, 3) of a model's latents, through the family's chunked decode (one chunk for
    families whose VAE is small enough to decode at once)."""
    check_latents(model, latents)
    return model.decode_chunks(latents, settings)


# ---------------------------------------------------------------------------------------------------------------
# Crash safety: latents files
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LatentsInfo:
    """The JSON metadata stored with saved latents (safetensors metadata key "kinema")."""
    family: str                       # e.g. "wan", "animatediff"
    model: str                        # model folder name (models/diffusers/<model>)
    frames: int                       # frames the latents decode to
    fps: float | None = None          # frames per second of the video, when known
    format: str | None = None         # video format the decode was writing ("mp4", ...)
    tags: dict[str, str] = field(default_factory=dict)   # video metadata tags (prompt, workflow) to write again
    version: int = LATENTS_FORMAT


def latents_path_for(video: Path) -> Path:
    """`out/video_00001_.mp4` -> `out/video_00001_.latents.safetensors` (the same ComfyUI counter)."""
    video = Path(video)
    return video.with_name(video.stem + LATENTS_SUFFIX)


def video_path_for(latents_file: Path, fmt: str) -> Path:
    """The inverse of latents_path_for: `x.latents.safetensors` -> `x.<fmt>`."""
    name = Path(latents_file).name
    stem = name[:-len(LATENTS_SUFFIX)] if name.endswith(LATENTS_SUFFIX) else Path(name).stem
    return Path(latents_file).with_name(f"{stem}.{fmt}")


def save_latents(path, latents: torch.Tensor, info: LatentsInfo, audio: dict | None = None) -> Path:
    """Write latents (1, C, f, h, w), their metadata and optionally the video's AUDIO as safetensors, atomically.
    Returns `path`."""
    from safetensors.torch import save_file
    from .media import atomic_write, check_track
    tensors = {"latents": latents.detach().float().cpu().contiguous()}
    meta = asdict(info)
    if audio is not None:
        wav, rate = check_track("audio", audio)                                  # (C, T) float32
        tensors["audio"], meta["sample_rate"] = wav.contiguous(), rate
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"kinema": json.dumps(meta)})
    return Path(path)


def load_latents(path) -> tuple[torch.Tensor, LatentsInfo, dict | None]:
    """Read a file written by save_latents: (latents (1, C, f, h, w) float32, metadata, AUDIO dict or None)."""
    from safetensors import SafetensorError
    from safetensors.torch import safe_open
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latents file not found: {path}. Fix: check the path; Decode And Save Video "
                                f"writes *{LATENTS_SUFFIX} beside the video in the output folder.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get("kinema")
            keys = set(f.keys())
            tensor = f.get_tensor("latents") if "latents" in keys else None
            wav = f.get_tensor("audio") if "audio" in keys else None
    except (SafetensorError, OSError, ValueError) as exc:
        fail("latents", "must be a readable .safetensors file", path.name, f"It could not be read ({exc}).")
    if meta is None or tensor is None:
        fail("latents", "must be a Kinema latents file (a `latents` tensor and `kinema` metadata)", path.name,
             f"Pick a *{LATENTS_SUFFIX} file written by Decode And Save Video.")
    try:
        raw = json.loads(meta)
        info = LatentsInfo(**{k: raw[k] for k in LatentsInfo.__dataclass_fields__ if k in raw})
        audio = None if wav is None else {"waveform": wav[None], "sample_rate": int(raw["sample_rate"])}
    except (ValueError, TypeError, KeyError) as exc:    # metadata that is not an object, lacks a field, ...
        fail("latents", "must carry Kinema's metadata (a JSON object with family, model, frames and, with audio, "
             "sample_rate)", path.name, f"Its metadata could not be read ({type(exc).__name__}: {exc}); pick a "
             f"*{LATENTS_SUFFIX} file written by Decode And Save Video.")
    return tensor, info, audio


def describe(model, latents: torch.Tensor, fps: float | None = None, fmt: str | None = None,
             tags: dict[str, str] | None = None) -> LatentsInfo:
    """The metadata for a model's latents."""
    return LatentsInfo(family=model.name, model=model.path.name, frames=model.pixel_frames(latents.shape[2]),
                       fps=None if fps is None else float(fps), format=fmt, tags=dict(tags or {}))


# ---------------------------------------------------------------------------------------------------------------
# Decode straight into a video file
# ---------------------------------------------------------------------------------------------------------------

def decode_to_file(model, latents: torch.Tensor, path, fps: float, fmt: str = "mp4", *, audio: dict | None = None,
                   settings: TileSettings | None = None, metadata: dict[str, str] | None = None,
                   on_frames: Callable[[int, int], None] | None = None,
                   decoder: Callable[[torch.Tensor], Iterator[torch.Tensor]] | None = None) -> Path:
    """Decode latents (1, C, f, h, w) chunk by chunk straight into a video file (atomic: the file exists only
    when every frame is in it). A tile-by-tile decode keeps the clip's output in a temporary file beside the video
    (spill_to), so memory stays flat with the clip's length. on_frames(done, total) is called after each VAE call
    and each chunk written, with the progress in frames, never going back (may raise to stop).
    decoder: latents -> IMAGE chunks instead of the model's VAE (a tiny decoder's decode_chunks: draft)."""
    from .media import VideoWriter
    check_latents(model, latents)
    total = model.pixel_frames(latents.shape[2])
    shown = 0

    def progress(done: int) -> None:          # never backwards: VAE calls first (tile by tile), then frames written
        nonlocal shown
        shown = max(shown, done)
        if on_frames is not None:
            on_frames(shown, total)

    reported = calls_reported(lambda k, calls: progress(min(total - 1, k * total // calls)))
    with reported, spill_to(Path(path).parent), VideoWriter(path, fps, fmt, audio=audio, metadata=metadata) as out:
        for chunk in (decoder(latents) if decoder is not None else stream_decode(model, latents, settings)):
            out.write(chunk)
            progress(out.frames)
    if out.frames != total:                         # a family whose decode disagrees with its own frame count
        fail("latent", f"decoded to {out.frames} frames, not the {total} its length implies", out.frames,
             "Report this: the family's decode and temporal ratio disagree.")
    return Path(path)


@dataclass(frozen=True)
class SavedDecode:
    video: Path
    latents: Path | None     # the latents file, when kept


def decode_and_save(model, latents: torch.Tensor, path, fps: float, fmt: str = "mp4", *,
                    audio: dict | None = None, settings: TileSettings | None = None,
                    metadata: dict[str, str] | None = None, keep_latents: bool = False,
                    on_frames: Callable[[int, int], None] | None = None,
                    decoder: Callable[[torch.Tensor], Iterator[torch.Tensor]] | None = None) -> SavedDecode:
    """Crash-safe decode: save the latents beside `path` first (x.latents.safetensors), then stream the decode
    into the video. On success the latents file is deleted unless keep_latents; on failure it stays (and no
    half-written video does), to resume with the Load Latent node or `kinema decode`."""
    from .media import VideoWriter
    check_latents(model, latents)
    fmt_v = VideoWriter(path, fps, fmt, audio=audio).fmt.value     # checks fps, format and audio before writing
    lat_path = save_latents(latents_path_for(path), latents, describe(model, latents, fps, fmt_v, metadata), audio)
    video = decode_to_file(model, latents, path, fps, fmt_v, audio=audio, settings=settings, metadata=metadata,
                           on_frames=on_frames, decoder=decoder)
    if not keep_latents:
        lat_path.unlink(missing_ok=True)
        return SavedDecode(video, None)
    return SavedDecode(video, lat_path)
