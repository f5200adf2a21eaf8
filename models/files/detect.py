"""Which model a file holds, from its tensors' names and shapes only (never from the file name), as ComfyUI's
comfy/model_detection.py does for Wan: dim from `head.modulation`, out channels from `head.head` rows / 4,
heads = dim // 128, ffn_dim from `blocks.0.ffn.0`, layers by counting `blocks.N.`, in channels from
`patch_embedding`; I2V by `img_emb.proj.0`, FLF2V by `img_emb.emb_pos`, VACE by `vace_patch_embedding`.

The known variants' configs ship as small JSON files in configs/ (no weights). Detection works on diffusers names
(the file's keys are renamed first), so every layout goes through one path.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import fail

CONFIGS = Path(__file__).resolve().parent / "configs"
# the fields that tell variants apart (diffusers config names)
SIGNATURE = ("dim", "ffn_dim", "num_layers", "in_channels", "out_channels", "text_dim", "image_dim",
             "pos_embed_seq_len", "vace_layers", "vace_in_channels")


@functools.lru_cache(maxsize=None)
def known_variants(family: str = "wan") -> dict[str, dict]:
    """{name: variant record} from configs/*.json (denoisers only: records with a transformer class)."""
    out = {}
    for p in sorted(CONFIGS.glob("*.json")):
        rec = json.loads(p.read_text())
        if rec.get("family") == family and rec.get("class", "").endswith("Transformer3DModel"):
            out[rec["name"]] = rec
    return out


def vae_variant(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


@dataclass
class Detected:
    """What the shapes say: the diffusers config, the known variant (None when unknown) and its record."""
    config: dict
    variant: str | None
    record: dict = field(default_factory=dict)

    @property
    def is_vace(self) -> bool:
        return "vace_layers" in self.config

    @property
    def label(self) -> str:
        return self.record.get("label", "unknown Wan variant")


def _count(names, prefix: str) -> int:
    ids = {int(n[len(prefix):].split(".", 1)[0]) for n in names if n.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def wan_config(shapes: dict[str, tuple]) -> dict:
    """A WanTransformer3DModel / WanVACETransformer3DModel config from {diffusers name: shape}."""
    dim = shapes["scale_shift_table"][-1]
    patch = list(shapes["patch_embedding.weight"][2:])
    cfg = {
        "patch_size": patch,
        "num_attention_heads": max(dim // 128, 1),
        "attention_head_dim": 128 if dim >= 128 else dim,
        "in_channels": shapes["patch_embedding.weight"][1],
        "out_channels": shapes["proj_out.weight"][0] // (patch[0] * patch[1] * patch[2]),
        "text_dim": shapes["condition_embedder.text_embedder.linear_1.weight"][1],
        "freq_dim": shapes["condition_embedder.time_embedder.linear_1.weight"][1],
        "ffn_dim": shapes["blocks.0.ffn.net.0.proj.weight"][0],
        "num_layers": _count(shapes, "blocks."),
        "cross_attn_norm": "blocks.0.norm2.weight" in shapes,
        "qk_norm": "rms_norm_across_heads" if "blocks.0.attn1.norm_q.weight" in shapes else None,
        "eps": 1e-6,
        "image_dim": None,
        "added_kv_proj_dim": None,
        "rope_max_seq_len": 1024,
        "pos_embed_seq_len": None,
    }
    if "condition_embedder.image_embedder.ff.net.0.proj.weight" in shapes:
        cfg["image_dim"] = shapes["condition_embedder.image_embedder.ff.net.0.proj.weight"][1]
        cfg["added_kv_proj_dim"] = dim
    if "condition_embedder.image_embedder.pos_embed" in shapes:
        cfg["pos_embed_seq_len"] = shapes["condition_embedder.image_embedder.pos_embed"][1]
    n_vace = _count(shapes, "vace_blocks.")
    if n_vace:  # ComfyUI: VACE block i feeds block i * (num_layers // n_vace)
        cfg["vace_layers"] = list(range(0, cfg["num_layers"], cfg["num_layers"] // n_vace))[:n_vace]
        cfg["vace_in_channels"] = shapes["vace_patch_embedding.weight"][1]
    return cfg


def signature(cfg: dict) -> dict:
    sig = {k: cfg.get(k) for k in SIGNATURE}
    sig["dim"] = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    sig["vace_layers"] = len(cfg["vace_layers"]) if cfg.get("vace_layers") else None
    return sig


def nearest(cfg: dict, n: int = 2) -> list[tuple[str, dict]]:
    """The n known variants whose signature differs from cfg's in the fewest fields, with those differences."""
    sig = signature(cfg)
    scored = []
    for name, rec in known_variants().items():
        other = signature(rec["diffusers_config"])
        diff = {k: other[k] for k in SIGNATURE if other[k] != sig[k]}
        scored.append((len(diff), name, diff))
    scored.sort(key=lambda t: (t[0], t[1]))
    return [(name, diff) for _, name, diff in scored[:n]]


def detect_wan(shapes: dict[str, tuple], arg: str, path_name: str, strict: bool = True) -> Detected:
    """Detect a Wan denoiser's config and variant. strict: an unknown set of shapes is an error naming what was
    detected and the nearest known variants; not strict: it loads with the detected config (tiny test models)."""
    missing = [k for k in ("scale_shift_table", "patch_embedding.weight", "proj_out.weight",
                           "blocks.0.ffn.net.0.proj.weight", "condition_embedder.text_embedder.linear_1.weight",
                           "condition_embedder.time_embedder.linear_1.weight") if k not in shapes]
    if missing:
        vace_only = any(k.startswith("vace_blocks.") for k in shapes) and "scale_shift_table" not in shapes
        fix = ("It holds only a VACE module: use a full VACE file (wan2.1_vace_*), not the separate module."
               if vace_only else "Pick a complete Wan denoiser file from diffusion_models/.")
        fail(arg, "is not a complete Wan denoiser", f"{path_name} (missing {missing[:3]})", fix)
    cfg = wan_config(shapes)
    sig = signature(cfg)
    for name, rec in known_variants().items():
        if signature(rec["diffusers_config"]) == sig:
            return Detected(dict(rec["diffusers_config"]), name, rec)
    if strict:
        shown = {k: v for k, v in sig.items() if v is not None}
        near = "; ".join(f"{n} (differs in {d})" for n, d in nearest(cfg))
        fail(arg, "has tensor shapes of no known Wan variant", f"{path_name}: {shown}",
             f"Nearest known variants: {near}. Use an official Wan 2.1/2.2 file, or pass strict=False to load the "
             f"detected config as it is.")
    return Detected(cfg, None, {})
