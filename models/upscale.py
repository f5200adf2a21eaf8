"""Learned video upscalers (KINEMA_UPSCALER): what Video Upscale runs instead of bicubic when one is connected.

Video LDM's idea: the upsampler is a model with temporal layers, so added detail agrees from frame to frame. An
upscaler is one small protocol (`Upscaler`): load a folder, enlarge frames by its `scale` (one pass), keep memory
flat however long the clip. Kinds are registered in `UPSCALERS` (a registry.Registry, like the model families):
the Load Upscale Model node lists the folders a registered kind accepts, by their model_index.json.

    kinema_tiny_upscaler   Kinema-Tiny Upscaler (bundled, models/tiny/upscaler.py): a (2+1)D residual conv net
                           on bicubic, 32 -> 64 px for Kinema-Tiny's clips; pixels in, pixels out.
    ltx2_latent_upsampler  LTX-2's latent upsampler (LTX2LatentUpsamplePipeline, families/ltx2_upsample.py): on
                           LTX-2 latents (Latent Upscale, or Video Upscale with an LTX-2 model: `latent` is True);
                           alone, frames go through its folder's VAE (encode, upsample, decode). Also ONE
                           Lightricks/ComfyUI file from latent_upscale_models/ (files/upsampler.py): no VAE, so
                           it needs the LTX-2 model (`load_upscaler` takes the file, `is_upscaler_file` tells one).

Long clips: `upscale` runs `upscale_piece` on chunks of frames and, for large frames, spatial tiles, each read
with `temporal_context` frames and `spatial_context` pixels of margin, and keeps only the middle: for a model
whose receptive field fits in those margins, the result equals the whole clip in one pass (tests check it),
while memory stays that of one piece.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from .checks import check_frames, fail
from .families.registry import AUTO, Registry

ChunkCallback = Callable[[int, int], None]        # (pieces done, pieces in all)
PIECE_BUDGET = 1 << 20                             # input pixels x frames per piece (about 1 GB of activations)


class Upscaler:
    """One learned upscaler. Frames are IMAGE tensors (F, H, W, 3) float 0..1 on the CPU, in and out."""
    name: str = ""                 # registry key
    title: str = ""                # for messages and the loader's description
    scale: int = 2                 # spatial factor of one pass
    temporal_context: int = 0      # input frames each side that one output frame depends on
    spatial_context: int = 0       # input pixels each side that one output pixel depends on
    chunk_frames: int = 32         # output frames per piece (the piece reads 2 x temporal_context more)

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype):
        self.path, self.device, self.dtype = Path(path), device, dtype

    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        """Whether a folder's model_index.json is this kind's."""
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "Upscaler":
        raise NotImplementedError

    def check_frames(self, frames: torch.Tensor, arg: str = "images") -> None:
        """Sizes this upscaler takes (the default: any IMAGE with at least one frame)."""
        if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[-1] not in (3, 4) \
                or frames.shape[0] == 0:
            fail(arg, "must be IMAGE frames (F, H, W, 3) with at least one frame",
                 tuple(getattr(frames, "shape", ())), "Connect Load Video or Video Decode.")

    def upscale_piece(self, frames: torch.Tensor) -> torch.Tensor:
        """One piece: (f, h, w, 3) -> (f, scale h, scale w, 3), as if it were a whole clip."""
        raise NotImplementedError

    def upscale(self, frames: torch.Tensor, on_chunk: ChunkCallback | None = None) -> torch.Tensor:
        """frames (F, H, W, 3) 0..1 -> (F, scale H, scale W, 3) float32 on the CPU, in pieces (module docstring)."""
        self.check_frames(frames)
        return run_in_pieces(self.upscale_piece, frames[..., :3].float().cpu(), self.scale, self.temporal_context,
                             self.spatial_context, self.chunk_frames, self.tile_side(frames), on_chunk)

    def tile_side(self, frames: torch.Tensor) -> int:
        """Input tile side so that one piece stays within PIECE_BUDGET; 0 = whole frames."""
        n = min(frames.shape[0], self.chunk_frames) + 2 * self.temporal_context
        h, w = frames.shape[1:3]
        if h * w * n <= PIECE_BUDGET:
            return 0
        return max(4 * self.spatial_context, int((PIECE_BUDGET / n) ** 0.5) - 2 * self.spatial_context)


def _spans(size: int, tile: int) -> list[tuple[int, int]]:
    """[start, end) kept regions of `size` in steps of `tile` (one span when tile is 0 or covers it)."""
    if tile <= 0 or tile >= size:
        return [(0, size)]
    return [(a, min(size, a + tile)) for a in range(0, size, tile)]


def run_in_pieces(fn: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor, scale: int, context: int,
                  margin: int, chunk: int, tile: int = 0, on_chunk: ChunkCallback | None = None) -> torch.Tensor:
    """Run fn ((f, h, w, 3) -> (f, scale h, scale w, 3)) over a clip in pieces and stitch the results.

    Args:
        frames: (F, H, W, 3) float on the CPU.
        context: frames read each side of a chunk of `chunk` output frames; margin: pixels each side of a tile.
        tile: kept tile side in input pixels (0: whole frames).
    Returns:
        (F, scale H, scale W, 3) float32: equal to fn(frames) when fn's receptive field fits in context / margin.
    """
    n, h, w, _ = frames.shape
    out = torch.empty(n, h * scale, w * scale, 3)
    times, ys, xs = _spans(n, max(1, chunk)), _spans(h, tile), _spans(w, tile)
    total, done = len(times) * len(ys) * len(xs), 0
    for t0, t1 in times:
        a, b = max(0, t0 - context), min(n, t1 + context)
        for y0, y1 in ys:
            ya, yb = max(0, y0 - margin), min(h, y1 + margin)
            for x0, x1 in xs:
                xa, xb = max(0, x0 - margin), min(w, x1 + margin)
                piece = fn(frames[a:b, ya:yb, xa:xb])                               # (b-a, s(yb-ya), s(xb-xa), 3)
                out[t0:t1, y0 * scale:y1 * scale, x0 * scale:x1 * scale] = piece[
                    t0 - a:t1 - a, (y0 - ya) * scale:(y1 - ya) * scale, (x0 - xa) * scale:(x1 - xa) * scale].float()
                done += 1
                if on_chunk is not None:
                    on_chunk(done, total)
    return out


# ---- Kinema-Tiny Upscaler ----------------------------------------------------------------------------------------
class KinemaTinyUpscaler(Upscaler):
    """The bundled Kinema-Tiny Upscaler (models/tiny/upscaler.py): 2x, trained on Kinema-Tiny's 32 px clips.
    Fully convolutional, so any size and length runs; it is good at what it was trained on (simple bright shapes
    on dark backgrounds). Runs in fp32 whatever the loader's dtype (it is tiny; half precision bands colours)."""
    name = "kinema_tiny_upscaler"
    title = "Kinema-Tiny Upscaler"

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype, net):
        super().__init__(path, device, torch.float32)
        self.net = net
        self.scale = net.config.scale
        self.temporal_context = net.temporal_radius
        self.spatial_context = net.spatial_radius

    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        from .tiny.upscaler import PIPELINE_CLASS
        return model_index.get("_class_name") == PIPELINE_CLASS

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "KinemaTinyUpscaler":
        from .tiny.upscaler import load_folder
        return cls(path, device, dtype, load_folder(Path(path), device, torch.float32))

    @torch.no_grad()
    def upscale_piece(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.to(self.device, torch.float32).permute(3, 0, 1, 2)[None]           # (1, 3, f, h, w)
        return self.net(x)[0].permute(1, 2, 3, 0).cpu()                               # (f, 2h, 2w, 3)


# ---- LTX-2's latent upsampler -----------------------------------------------------------------------------------
class LTX2LatentUpsampler(Upscaler):
    """LTX-2's latent upsampler: an LTX2LatentUpsamplePipeline folder (vae/ + latent_upsampler/), or ONE file in
    Lightricks' layout from models/latent_upscale_models (ComfyUI's; models/files/upsampler.py: no VAE of its own).
    2x in space, and 2x in time when its config says temporal_upsample. With an LTX-2 model it works in that
    model's latents, normalised by the model's VAE (families/ltx2_upsample.py: Latent Upscale, Video Upscale's
    learned path); alone (no LTX-2 model), through the folder's own VAE, which a file has not."""
    name = "ltx2_latent_upsampler"
    title = "LTX-2 latent upsampler"
    latent = True                 # works on LTX-2 latents: Video Upscale refines with an LTX-2 model after it

    def __init__(self, path: Path, device: torch.device, dtype: torch.dtype, pipe=None, net=None):
        super().__init__(path, device, dtype)
        self.pipe = pipe
        self.vae = pipe.vae if pipe is not None else None           # None: a single file (no VAE of its own)
        self.net = pipe.latent_upsampler if pipe is not None else net
        config = self.net.config
        self.scale = int(round(config.get("rational_spatial_scale", 2.0))) if config.spatial_upsample else 1
        self.temporal = bool(config.temporal_upsample)
        self.temporal_ratio = pipe.vae_temporal_compression_ratio if pipe is not None else None

    @classmethod
    def accepts(cls, model_index: dict) -> bool:
        return model_index.get("_class_name") == "LTX2LatentUpsamplePipeline"

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "LTX2LatentUpsampler":
        from diffusers import LTX2LatentUpsamplePipeline
        from .families.base import load_pipeline
        return cls(path, device, dtype, load_pipeline(LTX2LatentUpsamplePipeline, path, device, dtype))

    @classmethod
    def load_file(cls, path: Path, device: torch.device, dtype: torch.dtype) -> "LTX2LatentUpsampler":
        """One Lightricks/ComfyUI upsampler .safetensors file (config from its metadata; files/upsampler.py)."""
        from .files.upsampler import load_upsampler_file
        return cls(path, device, dtype, net=load_upsampler_file(path, dtype, device))

    # ---- latents ------------------------------------------------------------------------------------------------
    def upsample_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """raw (denormalised) VAE latents (1, C, f, h, w) -> (1, C, f', 2h, 2w), f' = 2f - 1 with temporal upsampling
        else f: LTX2LatentUpsamplePipeline's latent output (adain and tone mapping off, as its defaults)."""
        with torch.no_grad():
            return self.net(latents.to(self.device, self.net.dtype)).float()

    def upsample(self, model, latents: torch.Tensor) -> torch.Tensor:
        """an LTX-2 model's normalised video latents (1, C, f, h, w) -> normalised upsampled latents."""
        if latents.shape[1] != self.net.config.in_channels:
            fail("upscaler", f"takes {self.net.config.in_channels} latent channels, the model's latents have "
                 f"{latents.shape[1]}", self.path.name, "Use the upsampler released with the LTX-2 model.")
        vae = model.vae
        raw = model.pipe._denormalize_latents(latents.to(self.device, torch.float32), vae.latents_mean,
                                              vae.latents_std, vae.config.scaling_factor)
        return model.pipe._normalize_latents(self.upsample_raw(raw), vae.latents_mean, vae.latents_std,
                                             vae.config.scaling_factor)

    # ---- pixels (no LTX-2 model): the folder's own VAE ---------------------------------------------------------
    def check_frames(self, frames: torch.Tensor, arg: str = "images") -> None:
        if self.vae is None:
            fail("model", "must be an LTX-2 model connected beside this upsampler: a single upsampler file has no "
                 "VAE of its own, it works in the LTX-2 model's latents", self.path.name,
                 "Connect the LTX-2 model (Load Video Model (Checkpoint) or Load Video Model) to Video Upscale's "
                 "`model` input, or use an LTX2LatentUpsamplePipeline folder (vae/ + latent_upsampler/).")
        super().check_frames(frames, arg)
        check_frames(arg, frames.shape[0], self.temporal_ratio)

    def upscale(self, frames: torch.Tensor, on_chunk: ChunkCallback | None = None) -> torch.Tensor:
        """frames (F, H, W, 3) 0..1, F = r*k + 1 -> (F', 2H, 2W, 3) through the folder's VAE (encode, upsample,
        decode; F' = 2F - 1 with temporal upsampling)."""
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import retrieve_latents
        self.check_frames(frames)
        pixels = (frames[..., :3].float().permute(3, 0, 1, 2)[None] * 2 - 1).to(self.device, self.vae.dtype)
        with torch.no_grad():
            z = retrieve_latents(self.vae.encode(pixels), sample_mode="argmax")
            timestep = torch.zeros(1, device=self.device) if self.vae.config.timestep_conditioning else None
            video = self.vae.decode(self.upsample_raw(z).to(self.vae.dtype), timestep, return_dict=False)[0]
        if on_chunk is not None:
            on_chunk(1, 1)
        return (video[0].float() / 2 + 0.5).clamp(0, 1).permute(1, 2, 3, 0).cpu()



UPSCALERS = Registry("learned upscaler", "Load Upscale Model")
for _cls in (KinemaTinyUpscaler, LTX2LatentUpsampler):            # append only
    UPSCALERS.register(_cls)


def load_upscaler(path: Path, device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Upscaler:
    """An upscaler folder (model_index.json naming a registered kind), or a single upsampler file (.safetensors in
    Lightricks' layout: LTX-2's latent upsampler), as an Upscaler."""
    if Path(path).is_file() or Path(path).suffix.lower() in (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin"):
        return LTX2LatentUpsampler.load_file(Path(path), device or torch.device("cpu"), dtype)
    return UPSCALERS.load(path, AUTO, device, dtype)


def is_upscaler_file(path: Path) -> bool:
    """Whether a .safetensors file (header only) is an upsampler Kinema loads (LTX-2's latent upsampler)."""
    from .files.formats import open_tensors
    from .files.upsampler import is_latent_upsampler
    with open_tensors(path, "upscaler") as f:
        return is_latent_upsampler(f.keys())


def learned_upscale(upscaler: Upscaler, frames: torch.Tensor, factor: int,
                    on_chunk: ChunkCallback | None = None) -> torch.Tensor:
    """Enlarge frames (F, H, W, 3) by `factor` with the upscaler: factor must be a power of its scale (x4 with a
    2x model runs it twice). Returns (F, factor H, factor W, 3) float32 0..1 on the CPU."""
    if not isinstance(upscaler, Upscaler):
        fail("upscaler", "must be a learned upscaler (KINEMA_UPSCALER)", type(upscaler).__name__,
             "Connect Load Upscale Model.")
    if upscaler.scale < 2:
        raise RuntimeError(f"{upscaler.title} declares scale {upscaler.scale}; an upscaler's scale must be >= 2")
    passes, size = 0, 1
    while size < factor:
        size, passes = size * upscaler.scale, passes + 1
    if size != factor:
        fail("factor", f"must be a power of the upscaler's scale ({upscaler.scale}x, {upscaler.title})",
             f"x{factor}", f"Pick x{upscaler.scale} (or disconnect `upscaler` for bicubic).")
    out = frames[..., :3]
    for i in range(passes):
        report = None if on_chunk is None else (lambda d, t, i=i: on_chunk(i * t + d, passes * t))
        out = upscaler.upscale(out, report)
    return out


__all__ = ["KinemaTinyUpscaler", "LTX2LatentUpsampler", "UPSCALERS", "Upscaler", "is_upscaler_file", "learned_upscale",
           "load_upscaler", "run_in_pieces"]
