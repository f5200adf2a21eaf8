"""A Wan family (the KINEMA_MODEL every node takes) from ComfyUI's split files: denoiser (+ the Wan 2.2 A14B
low-noise expert), UMT5 text encoder, VAE and, for Wan 2.1 image-to-video, CLIP vision.

The files are checked against each other from their headers first (no weights read): the variant comes from the
denoiser's tensors (detect.py), the pairings from pairing.py. Then the modules are loaded and assembled into the
diffusers pipeline the folder route would have loaded (WanPipeline / WanImageToVideoPipeline / WanVACEPipeline, with
the variant's scheduler from configs/), and handed to the same WanFamily / WanVACEFamily constructors.

- Text-to-video or image-to-video from the shapes: in_channels > out_channels (latents + mask + image latents) is
  image-to-video; a 48-channel VAE (wan2.2_vae) is Wan 2.2 TI2V 5B, which conditions by timestep (expand_timesteps).
- Wan 2.2 A14B: `denoiser` is the high-noise expert, `denoiser_2` the low-noise one; the switch boundary is the
  variant's (0.875 T2V, 0.9 I2V of the 1000 training timesteps), as Wan's own configs.
- The text encoder (UMT5-XXL: 11 GB in bf16) is loaded from its file for the first prompt; `text_encoder_memory`
  says what happens after each prompt (TextEncoderMemory). Changing a prompt always works: the encoder comes back
  from RAM or from its file.
"""
from __future__ import annotations

import contextlib
import gc
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch

from ..checks import check_choice, fail
from .clip_vision import _prefix as clip_prefix, clip_image_processor, clip_vision_config, load_clip_vision
from .detect import CONFIGS, Detected, known_variants
from .formats import FP8, open_tensors, scaled_fp8_format
from .pairing import check_clip_vision, check_pair, check_text_encoder, check_vae
from .text import inspect_text_encoder, load_text_encoder
from .vae import detect_vae, load_vae

DEFAULT_BOUNDARY = {"t2v": 0.875, "i2v": 0.9}   # Wan 2.2 A14B (Wan's configs), for pairs of no known variant


class TextEncoderMemory(str, Enum):
    """What happens to a files-loaded text encoder after each prompt. Saved in workflows: never rename a value."""
    OFFLOAD = "offload"   # moved to the CPU (RAM); back to the device for the next prompt (ComfyUI's behaviour)
    FREE = "free"         # dropped; the next prompt loads it from its file again (least memory)
    KEEP = "keep"         # stays on the device (fastest prompt changes, most VRAM)


class WeightDtypeChoice(str, Enum):
    """How the denoiser's weights are kept in memory (ComfyUI's weight_dtype). Never rename a value."""
    AUTO = "auto"         # fp8 files stay fp8 (scaled ones with their scales); other files in the compute dtype
    FP8 = "fp8"           # fp8 (a 16-bit file is quantised per tensor to e4m3fn with a scale)
    FP16 = "fp16"
    BF16 = "bf16"


@dataclass(frozen=True)
class WanFiles:
    """The files of one Wan model, as a ComfyUI user has them (paths)."""
    denoiser: Path                    # diffusion_models/ (or unet/): the model, or the A14B high-noise expert
    text_encoder: Path                # text_encoders/ (or clip/): umt5_xxl_*
    vae: Path                         # vae/: wan_2.1_vae or wan2.2_vae
    denoiser_2: Path | None = None    # the Wan 2.2 A14B low-noise expert
    clip_vision: Path | None = None   # clip_vision/: clip_vision_h (Wan 2.1 I2V / FLF2V only)


class TextEncoderFile:
    """The text side of a files-loaded model: loaded from its file when a prompt is encoded, then offloaded, freed
    or kept (TextEncoderMemory). The tokenizer, built once from the file's `spiece_model`, always stays."""

    def __init__(self, path: Path, dtype: torch.dtype, device: torch.device, memory: str = "offload"):
        check_choice("text_encoder_memory", memory, [c.value for c in TextEncoderMemory])
        self.path, self.dtype, self.device, self.memory = Path(path), dtype, torch.device(device), memory
        self.encoder = None           # files.text.TextEncoder while loaded
        self.tokenizer = None
        self.loads = 0                # times the weights were read from the file

    @property
    def resident(self) -> torch.device | None:
        """Where the weights are now (None: not loaded)."""
        return None if self.encoder is None else next(self.encoder.model.parameters()).device

    @contextlib.contextmanager
    def loaded(self, pipe):
        """Inside the block, pipe.text_encoder / pipe.tokenizer are the encoder, on the model's device."""
        if self.encoder is None:
            self.encoder = load_text_encoder(self.path, self.dtype, self.device)
            self.tokenizer = self.tokenizer or self.encoder.tokenizer
            self.loads += 1
        elif self.resident != self.device:
            self.encoder.model.to(self.device)
        pipe.text_encoder, pipe.tokenizer = self.encoder.model, self.tokenizer
        try:
            yield
        finally:
            self.after_prompt(pipe)

    def after_prompt(self, pipe) -> None:
        if self.memory == TextEncoderMemory.KEEP:
            return
        if self.memory == TextEncoderMemory.OFFLOAD:
            if self.device.type != "cpu":
                self.encoder.model.to("cpu")
            return
        pipe.text_encoder = None
        self.encoder = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


FIXTURE_MARK = "kinema_fixture"   # safetensors metadata key `kinema fixtures` writes into its tiny random files


def fixture_info(path) -> dict | None:
    """The metadata `kinema fixtures` writes into its files (tiny random weights of no published variant, which the
    files loader loads with the shapes as detected instead of refusing them), e.g. {"num_attention_heads": 2}; None
    for any other file."""
    path = Path(path)
    if path.suffix.lower() not in (".safetensors", ".sft") or not path.is_file():
        return None
    with open_tensors(path) as f:
        raw = f.metadata.get(FIXTURE_MARK)
    return None if raw is None else json.loads(raw)


def is_fixture(path) -> bool:
    return fixture_info(path) is not None


def _storage(weight_dtype: str, f, dtype: torch.dtype) -> torch.dtype:
    """The denoiser's weight storage dtype for a weight_dtype choice and this file."""
    choice = WeightDtypeChoice(weight_dtype)
    if choice == WeightDtypeChoice.FP16:
        return torch.float16
    if choice == WeightDtypeChoice.BF16:
        return torch.bfloat16
    fp8 = scaled_fp8_format(f) or next((f.dtype(k) for k in f.keys() if k.endswith(".weight") and
                                        f.dtype(k) in FP8), None)
    if choice == WeightDtypeChoice.FP8:
        return fp8 or torch.float8_e4m3fn
    return fp8 or dtype


def _header_checks(files: WanFiles, strict: bool) -> tuple[Detected, Detected | None, str]:
    """Every pairing checked from the files' headers (no weights read). Returns (denoiser, denoiser_2, VAE name)."""
    from . import detect_denoiser
    det = detect_denoiser(files.denoiser, strict=strict)
    det2 = None
    if files.denoiser_2 is not None:
        det2 = detect_denoiser(files.denoiser_2, strict=strict, arg="denoiser_2")
        check_pair(det, det2)
    check_text_encoder(det, inspect_text_encoder(files.text_encoder))
    with open_tensors(files.vae, "vae") as f:
        vae = detect_vae(f)
    check_vae(det, vae.z_dim)
    if det.config.get("image_dim") is None and files.clip_vision is not None:
        fail("clip_vision", f"is not used by {det.label} (it takes no CLIP image features)",
             Path(files.clip_vision).name, "Leave clip_vision empty: only Wan 2.1 I2V and FLF2V use it.")
    width = None
    if files.clip_vision is not None:
        with open_tensors(files.clip_vision, "clip_vision") as f:
            width = clip_vision_config(f, clip_prefix(f.keys(), "clip_vision", f.path.name))["hidden_size"]
    check_clip_vision(det, width)
    return det, det2, vae.variant


def _scheduler(det: Detected, pair: bool):
    from diffusers import UniPCMultistepScheduler
    cfg = json.loads((CONFIGS / "wan_scheduler.json").read_text())
    cfg.pop("notes", None)
    rec = det.record
    shift = rec.get("a14b_flow_shift", rec.get("flow_shift")) if pair else rec.get("flow_shift")
    cfg["flow_shift"] = float(shift or cfg["flow_shift"])
    return UniPCMultistepScheduler.from_config(cfg)


def load_wan_files(files: WanFiles, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                   weight_dtype: str = "auto", text_encoder_memory: str = "offload", strict: bool = True):
    """A WanFamily (or WanVACEFamily) from ComfyUI's split files; see the module docstring.

    Args:
        files: the paths (WanFiles).
        device, dtype: where and in which precision the model computes (the VAE always stays float32).
        weight_dtype: WeightDtypeChoice, the denoiser's weights in memory.
        text_encoder_memory: TextEncoderMemory, after each prompt.
        strict: refuse denoiser shapes of no known variant (False: load the detected config, for tiny test models).
    Returns: the family, with `.text_encoder_file` (TextEncoderFile) and `.variant` (the detected variant or None).
    """
    from diffusers import WanImageToVideoPipeline, WanPipeline, WanVACEPipeline
    from ..families import WanFamily, WanVACEFamily
    device = torch.device(device)
    check_choice("weight_dtype", weight_dtype, [c.value for c in WeightDtypeChoice])
    det, det2, vae_name = _header_checks(files, strict)
    text = TextEncoderFile(files.text_encoder, dtype, device, text_encoder_memory)
    transformer, transformer_2 = _denoisers(files, det2 is not None, dtype, device, weight_dtype, strict)
    parts = dict(tokenizer=None, text_encoder=None, vae=load_vae(files.vae, torch.float32, device),
                 scheduler=_scheduler(det, det2 is not None), transformer=transformer, transformer_2=transformer_2,
                 boundary_ratio=_boundary(det) if det2 is not None else None)
    cfg = det.config
    if det.is_vace:
        pipe, family = WanVACEPipeline(**parts), WanVACEFamily
    elif cfg["in_channels"] > cfg["out_channels"]:      # latents + mask + first-frame latents: image-to-video
        encoder = None if files.clip_vision is None else load_clip_vision(files.clip_vision, dtype, device)
        pipe = WanImageToVideoPipeline(**parts, image_encoder=encoder,
                                       image_processor=None if encoder is None else clip_image_processor(encoder))
        family = WanFamily
    else:
        pipe, family = WanPipeline(**parts, expand_timesteps=vae_name == "wan2.2_vae"), WanFamily
    pipe.set_progress_bar_config(disable=True)
    model = family(Path(files.denoiser), device, dtype, pipe)
    model.text_encoder_file = text
    model.variant = det.variant
    return model


def _denoisers(files: WanFiles, pair: bool, dtype, device, weight_dtype: str, strict: bool):
    """The denoiser(s), each stored by weight_dtype as its own file says (auto: an fp8 file stays fp8)."""
    from . import load_denoiser
    out = []
    for path, arg in ((files.denoiser, "denoiser"), (files.denoiser_2, "denoiser_2"))[: 2 if pair else 1]:
        with open_tensors(path, arg) as f:
            storage = _storage(weight_dtype, f, dtype)
        heads = (fixture_info(path) or {}).get("num_attention_heads")
        out.append(load_denoiser(path, dtype, device, strict=strict, arg=arg, storage=storage, heads=heads))
    return out[0], (out[1] if pair else None)


def _boundary(det: Detected) -> float:
    ratio = det.record.get("a14b_boundary_ratio")
    if ratio is None:
        ratio = DEFAULT_BOUNDARY["i2v" if det.config["in_channels"] > det.config["out_channels"] else "t2v"]
    return float(ratio)


__all__ = ["TextEncoderFile", "TextEncoderMemory", "WanFiles", "WeightDtypeChoice", "load_wan_files",
           "known_variants"]
