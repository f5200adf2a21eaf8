"""Checks that the parts a user picked belong together (the files loader node calls them before any sampling).

Each takes what the loaders return (or a `Detected` for the denoiser) and raises ValueError naming the input and
the fix: a 2.2 VAE with a 2.1 model, a text side of the wrong width, an I2V model without clip_vision, a second
denoiser that is not the first one's A14B partner.
"""
from __future__ import annotations

from typing import Any

from ..checks import fail
from .detect import Detected, known_variants

VAE_FOR_CHANNELS = {16: "wan_2.1_vae.safetensors", 48: "wan2.2_vae.safetensors"}


def _config(denoiser: Any) -> dict:
    return dict(denoiser.config) if isinstance(denoiser, Detected) else dict(getattr(denoiser, "config", {}))


def _label(denoiser: Any) -> str:
    variant = denoiser.variant if isinstance(denoiser, Detected) else getattr(denoiser, "kinema_variant", None)
    rec = known_variants().get(variant or "", {})
    return rec.get("label", "this Wan denoiser")


def check_vae(denoiser: Any, vae: Any, arg: str = "vae") -> None:
    """The VAE's latent channels must be the denoiser's (16: wan_2.1_vae; 48: wan2.2_vae for TI2V 5B)."""
    want = _config(denoiser)["out_channels"]
    got = vae.config.z_dim if hasattr(vae, "config") else int(vae)
    if got != want:
        name = getattr(vae, "kinema_variant", None) or f"a {got}-channel VAE"
        fix = VAE_FOR_CHANNELS.get(want, f"a VAE with {want} latent channels")
        fail(arg, f"must have the {want} latent channels {_label(denoiser)} works in", f"{name} ({got} channels)",
             f"Use {fix} (wan_2.1_vae for every Wan 2.1 model and the Wan 2.2 A14B pairs; wan2.2_vae only for "
             f"Wan 2.2 TI2V 5B).")


def check_text_encoder(denoiser: Any, text_encoder: Any, arg: str = "text_encoder") -> None:
    """The text encoder's output width must be the denoiser's text input (4096: UMT5-XXL for every Wan)."""
    want = _config(denoiser)["text_dim"]
    got = text_encoder.dim if hasattr(text_encoder, "dim") else int(text_encoder)
    if got != want:
        name = getattr(getattr(text_encoder, "path", None), "name", None) or "this text encoder"
        fail(arg, f"must output {want}-wide embeddings for {_label(denoiser)}", f"{name} ({got} wide)",
             "Use umt5_xxl_fp16.safetensors or umt5_xxl_fp8_e4m3fn_scaled.safetensors (UMT5-XXL, 4096 wide) "
             "from text_encoders/.")


def check_clip_vision(denoiser: Any, clip_vision: Any, arg: str = "clip_vision") -> None:
    """An image-projecting denoiser (Wan 2.1 I2V / FLF2V) needs CLIP vision features of its image width."""
    want = _config(denoiser).get("image_dim")
    if want is None:
        return
    if clip_vision is None:
        fail(arg, f"is required by {_label(denoiser)} (it projects CLIP image features)", None,
             "Add clip_vision_h.safetensors (ComfyUI's clip_vision/ folder) to the loader.")
    got = clip_vision.config.hidden_size if hasattr(clip_vision, "config") else int(clip_vision)
    if got != want:
        fail(arg, f"must give {want}-wide image features for {_label(denoiser)}", f"{got} wide",
             "Use clip_vision_h.safetensors (ViT-H, 1280 wide).")


def check_pair(high: Any, low: Any, arg: str = "denoiser_2") -> None:
    """A Wan 2.2 A14B pair: the low-noise expert must have the high-noise expert's shapes, and be an A14B one."""
    a, b = _config(high), _config(low)
    keys = ("num_layers", "ffn_dim", "in_channels", "out_channels", "num_attention_heads", "image_dim", "text_dim")
    diff = {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}
    if bool(a.get("vace_layers")) != bool(b.get("vace_layers")):   # a VACE model and a plain one
        diff["vace_layers"] = (a.get("vace_layers"), b.get("vace_layers"))
    if diff:
        fail(arg, f"must be the low-noise partner of {_label(high)} (same shapes)", f"{_label(low)}, differs in "
             f"{diff}", "Pick the matching *_low_noise_14B file (t2v with t2v, i2v with i2v).")
    variant = high.variant if isinstance(high, Detected) else getattr(high, "kinema_variant", None)
    rec = known_variants().get(variant or "", {})
    if variant is not None and "a14b_boundary_ratio" not in rec:
        fail(arg, "is only used with a Wan 2.2 A14B high-noise expert", _label(high),
             "Leave denoiser_2 empty for this model, or pick wan2.2_*_high_noise_14B as denoiser.")
