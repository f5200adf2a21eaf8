"""LoRA files -> changes to a denoiser's parameters: which tensors go to which parameter, for the layouts users
have, and which model a LoRA seems made for when it fits none.

A file key is `<name><suffix>`; the suffix says what the tensor is (one file may mix them):
  kohya / ComfyUI     .lora_down.weight  .lora_up.weight  .alpha           (scale = alpha / rank; 1 without alpha)
  diffusers / PEFT    .lora_A.weight  .lora_B.weight  .lora_B.bias   (alpha from the file's lora_adapter_metadata)
  older diffusers     .lora.down.weight / .lora.up.weight, `<attn>.processor.to_q_lora.down.weight`
  full-rank deltas    .diff (a weight), .diff_b (a bias), `<parent>.diff_m` (the parent's `modulation`),
                      .w_norm / .b_norm: lightx2v and CausVid distillation LoRAs for Wan
The name is a layer of the denoiser, written in one of these ways (a prefix such as `diffusion_model.`,
`transformer.`, `unet.` or `lora_unet_` in front):
  - the model's own (diffusers) names: `blocks.0.attn1.to_q`, `down_blocks.0.motion_modules.0.transformer_blocks.0.attn1.to_q`
  - the original checkpoint's names: Wan `blocks.0.self_attn.q`, `head.head`, `blocks.0.modulation`; AnimateDiff
    `...motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q`. Kinema lists the
    candidates and keeps only those that diffusers' own single-file converters (convert_wan_transformer_to_diffusers,
    convert_animatediff_checkpoint_to_diffusers) map onto the parameter, so the mapping is diffusers'
  - kohya's: either of the above with `_` for `.` (`lora_unet_blocks_0_self_attn_q`)
LoHa, LoKr and DoRA tensors are recognised and reported as not supported.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import torch
from torch import nn

# ---- what a LoRA changes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LowRank:
    """W += scale * up @ down. Linear: up (out, r), down (r, in). Convolution: down (r, in, *kernel) is a conv with
    the layer's stride and padding, up (out, r, 1, ...) a 1x1 conv."""
    up: torch.Tensor
    down: torch.Tensor
    scale: float                      # alpha / rank (1.0 without alpha)

    def dense(self) -> torch.Tensor:
        """The full delta (out, in, *kernel) in float32."""
        d = self.up.flatten(1).float() @ self.down.flatten(1).float()
        return d.reshape(self.up.shape[0], *self.down.shape[1:]) * self.scale


@dataclass(frozen=True)
class Delta:
    """P += delta, delta of the parameter's own shape (`diff`, `diff_b`, `diff_m`, `w_norm`, `lora_B.bias`)."""
    delta: torch.Tensor

    def dense(self) -> torch.Tensor:
        return self.delta.float()


@dataclass(frozen=True)
class Patch:
    """One change to one parameter of one denoiser module."""
    denoiser: str                     # the family attribute holding the module ("transformer", "unet")
    module: str                       # module path inside it ("blocks.0.attn1.to_q"; "" = the denoiser itself)
    leaf: str                         # the parameter's name on that module ("weight", "bias", "scale_shift_table")
    change: LowRank | Delta


@dataclass
class Resolved:
    """What a LoRA file does to a model: the patches, and for each file key whether it was used and why not."""
    patches: list[Patch]
    keys: list[str]                                         # every tensor name in the file
    used: set[str] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)   # key -> reason it was not loaded


# ---- reading the file's keys ------------------------------------------------------------------------------------
# (suffix, part): the first suffix a key ends with names the part; `_lora.` forms are old diffusers attention procs
_PARTS = (
    (".lora_down.weight", "down"), (".lora_up.weight", "up"), (".lora_mid.weight", "mid"), (".alpha", "alpha"),
    (".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora_B.bias", "up_bias"),
    (".lora_linear_layer.down.weight", "down"), (".lora_linear_layer.up.weight", "up"),
    (".lora.down.weight", "down"), (".lora.up.weight", "up"), ("_lora.down.weight", "down"), ("_lora.up.weight", "up"),
    (".diff_b", "diff_b"), (".diff_m", "diff_m"), (".diff", "diff"), (".w_norm", "diff"), (".b_norm", "diff_b"),
)
_UNSUPPORTED = re.compile(r"\.(hada_|lokr_|dora_scale|a1\.|a2\.|b1\.|b2\.|reshape_weight)")
_TEXT_ENCODER = ("lora_te", "text_encoder", "te_", "te1_", "te2_", "cond_stage_model", "text_model", "clip_")
PREFIXES = ("model.diffusion_model.", "diffusion_model.", "base_model.model.", "transformer.", "unet.",
            "lora_unet_", "lora_transformer_", "lycoris_", "lora_prior_unet_")


def split_key(key: str) -> tuple[str, str] | None:
    """`blocks.0.self_attn.q.lora_down.weight` -> (`blocks.0.self_attn.q`, "down"); None for an unknown kind."""
    for suffix, part in _PARTS:
        if key.endswith(suffix):
            return key[: -len(suffix)], part
    return None


def bare_name(name: str) -> str:
    """The layer name without the file's prefix and diffusers' old `.processor` segment."""
    for p in PREFIXES:
        if name.startswith(p):
            name = name[len(p):]
            break
    return name.replace(".processor.", ".")


def is_text_encoder(key: str) -> bool:
    return key.startswith(_TEXT_ENCODER)


# ---- every name a LoRA may use for a parameter ----------------------------------------------------------------
_WAN_TOP = {"scale_shift_table": "head.modulation", "proj_out": "head.head",
            "condition_embedder.time_embedder.linear_1": "time_embedding.0",
            "condition_embedder.time_embedder.linear_2": "time_embedding.2",
            "condition_embedder.text_embedder.linear_1": "text_embedding.0",
            "condition_embedder.text_embedder.linear_2": "text_embedding.2",
            "condition_embedder.time_proj": "time_projection.1",
            "condition_embedder.image_embedder.norm1": "img_emb.proj.0",
            "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
            "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
            "condition_embedder.image_embedder.norm2": "img_emb.proj.4",
            "condition_embedder.image_embedder.pos_embed": "img_emb.emb_pos"}
_WAN_ATTN = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "o", "add_k_proj": "k_img", "add_v_proj": "v_img",
             "norm_added_k": "norm_k_img"}
_WAN_BLOCK = {"norm2": "norm3", "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2", "proj_in": "before_proj",
              "proj_out": "after_proj"}
_WAN_BLOCK_RE = re.compile(r"^((?:vace_)?blocks\.\d+)\.(.+)$")


def wan_original(name: str) -> str | None:
    """A diffusers Wan parameter name -> the original Wan checkpoint's name (a candidate: diffusers confirms it)."""
    if name in _WAN_TOP:
        return _WAN_TOP[name]
    m = _WAN_BLOCK_RE.match(name)
    if m:
        block, rest = m.groups()
        if rest == "scale_shift_table":
            return f"{block}.modulation"
        mod, _, leaf = rest.rpartition(".")
        attn = re.match(r"^attn([12])\.(.+)$", mod)
        if attn:
            which = "self_attn" if attn[1] == "1" else "cross_attn"
            return f"{block}.{which}.{_WAN_ATTN.get(attn[2], attn[2])}.{leaf}"
        return f"{block}.{_WAN_BLOCK.get(mod, mod)}.{leaf}"
    mod, _, leaf = name.rpartition(".")
    return f"{_WAN_TOP.get(mod, mod)}.{leaf}"


_MOTION_RE = re.compile(r"^(.*\.motion_modules\.\d+)\.(.+)$")
_MOTION_BLOCK = {"attn1": "attention_blocks.0", "attn2": "attention_blocks.1", "norm1": "norms.0", "norm2": "norms.1",
                 "norm3": "ff_norm"}


def motion_original(name: str) -> str | None:
    """A diffusers UNetMotionModel motion-module parameter -> the original AnimateDiff name (a candidate)."""
    m = _MOTION_RE.match(name)
    if not m:
        return None
    head, rest = m.groups()
    rest = re.sub(r"^(transformer_blocks\.\d+)\.(attn1|attn2|norm1|norm2|norm3)\.",
                  lambda b: f"{b[1]}.{_MOTION_BLOCK[b[2]]}.", rest)
    return f"{head}.temporal_transformer.{rest}"


def _wan_forward(names: dict[str, str]) -> dict[str, str]:
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    return convert_wan_transformer_to_diffusers(dict(names))


def _motion_forward(names: dict[str, str]) -> dict[str, str]:
    from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers
    return convert_animatediff_checkpoint_to_diffusers(dict(names))


# denoiser class -> (candidate original name, diffusers' converter from original names)
ORIGINAL_LAYOUTS = {"WanTransformer3DModel": (wan_original, _wan_forward),
                    "WanVACETransformer3DModel": (wan_original, _wan_forward),
                    "UNetMotionModel": (motion_original, _motion_forward)}


def original_names(denoiser: nn.Module, names: list[str]) -> dict[str, str]:
    """{original checkpoint name: diffusers name} for the parameters `names` of `denoiser`: only the candidates
    diffusers' own converter maps back onto the same parameter are kept."""
    layout = ORIGINAL_LAYOUTS.get(type(denoiser).__name__)
    if layout is None:
        return {}
    candidate, forward = layout
    guesses = {}
    for n in names:
        orig = candidate(n)
        if orig is not None and orig != n:
            guesses[orig] = n
    converted = forward(guesses)                      # {diffusers name per the converter: the name we expected}
    return {orig: n for orig, n in guesses.items() if converted.get(n) == n}


def _kohya(name: str) -> str:
    """`blocks.0.self_attn.q.weight` -> `blocks_0_self_attn_q.weight` (the leaf keeps its dot)."""
    mod, _, leaf = name.rpartition(".")
    return f"{mod.replace('.', '_')}.{leaf}" if mod else name


class ParamIndex:
    """Every name a LoRA may use for a parameter of one denoiser -> the parameter's diffusers name."""

    def __init__(self, denoiser: nn.Module):
        self.params = dict(denoiser.named_parameters())
        names = list(self.params)
        aliases = {n: n for n in names}
        aliases.update({o: n for o, n in original_names(denoiser, names).items() if o not in aliases})
        for alias, n in list(aliases.items()):         # old diffusers attention processors: `to_out_lora`
            if ".to_out.0." in alias:
                aliases.setdefault(alias.replace(".to_out.0.", ".to_out."), n)
        self.names = dict(aliases)
        for alias, n in aliases.items():
            self.names.setdefault(_kohya(alias), n)

    def find(self, name: str) -> str | None:
        return self.names.get(name)


# ---- the file's entries -> patches ----------------------------------------------------------------------------
def peft_alpha(metadata: dict | None) -> tuple[float | None, dict[str, float]]:
    """(lora_alpha, {module suffix: alpha}) from diffusers' `lora_adapter_metadata` (keys may carry a component
    prefix such as `transformer.`); (None, {}) when the file has none."""
    raw = (metadata or {}).get("lora_adapter_metadata")
    if not raw:
        return None, {}
    try:
        meta = json.loads(raw)
    except ValueError:
        return None, {}
    alpha = next((v for k, v in meta.items() if k.split(".")[-1] == "lora_alpha"), None)
    pattern = next((v for k, v in meta.items() if k.split(".")[-1] == "alpha_pattern"), None) or {}
    return (float(alpha) if alpha is not None else None), {k: float(v) for k, v in pattern.items()}


def group_entries(keys: list[str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """{layer name: {part: file key}} and {key: reason} for keys that are no LoRA part Kinema applies."""
    entries: dict[str, dict[str, str]] = {}
    skipped: dict[str, str] = {}
    for key in keys:
        if is_text_encoder(key):
            skipped[key] = "text encoder (Load LoRA patches the video model only)"
            continue
        split = split_key(key)
        if split is None:
            skipped[key] = ("LoHa/LoKr/DoRA tensors are not supported" if _UNSUPPORTED.search(key)
                            else "not a LoRA tensor Kinema knows")
            continue
        name, part = split
        entries.setdefault(name, {})[part] = key
    return entries, skipped


def _fit(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """tensor viewed as `shape` when it has as many elements (e.g. (1, 6, D) vs (6, D)); None otherwise."""
    return tensor.reshape(shape) if tensor.numel() == shape.numel() else None


def low_rank(up: torch.Tensor, down: torch.Tensor, param: torch.Tensor, scale: float) -> LowRank | None:
    """up/down fitted to the parameter's layout (linear: 2-D; conv: down (r, in, *kernel), up (out, r, 1, ...)),
    or None when the shapes do not fit it."""
    r = down.shape[0]
    if up.shape[0] != param.shape[0] or up.flatten(1).shape[1] != r or down[0].numel() != param[0].numel():
        return None
    if param.ndim == 2:
        return LowRank(up.reshape(param.shape[0], r), down.reshape(r, param.shape[1]), scale)
    ones = (1,) * (param.ndim - 2)
    if down.ndim == 2 and param.shape[2:] != ones:
        return None
    return LowRank(up.reshape(param.shape[0], r, *ones), down.reshape(r, *param.shape[1:]), scale)


def resolve(tensors: dict[str, torch.Tensor], denoisers: dict[str, nn.Module], metadata: dict | None = None) -> Resolved:
    """Match a LoRA state dict to the model's denoiser modules.

    Args:
        tensors: the file's tensors (any dtype; kept as given: the patcher casts at use).
        denoisers: {family attribute: module} (Wan 2.2: both experts; each gets the patches that fit it).
        metadata: the safetensors metadata (diffusers' lora_adapter_metadata holds PEFT's lora_alpha).
    Returns: Resolved(patches, keys, used, skipped): a key is used when any denoiser took it.
    """
    entries, skipped = group_entries(list(tensors))
    out = Resolved([], list(tensors), set(), skipped)
    alpha = peft_alpha(metadata)
    indexes = {attr: ParamIndex(m) for attr, m in denoisers.items()}
    for name, parts in entries.items():
        failed: dict[str, str] = {}
        for attr, index in indexes.items():
            for patch, keys in _entry_patches(attr, index, bare_name(name), parts, tensors, alpha, failed):
                out.patches.append(patch)
                out.used.update(keys)
        for key in parts.values():
            if key not in out.used:
                out.skipped[key] = failed.get(key, "no matching layer in the model")
    return out


def _scale(parts, tensors, name: str, rank: int, alpha: tuple[float | None, dict[str, float]]) -> float:
    """alpha / rank: the file's `.alpha` tensor, else PEFT metadata's lora_alpha (or alpha_pattern), else 1."""
    if "alpha" in parts:
        return float(tensors[parts["alpha"]].float().item()) / rank
    default, pattern = alpha
    if default is not None:
        return next((a for k, a in pattern.items() if name.endswith(k)), default) / rank
    return 1.0


def _entry_patches(attr: str, index: ParamIndex, name: str, parts: dict[str, str], tensors, alpha,
                   failed: dict[str, str]) -> list[tuple[Patch, tuple[str, ...]]]:
    """The patches one layer entry makes on one denoiser, with the file keys each used; reasons for the keys that
    fit a layer of this denoiser but could not be used go to `failed`."""
    made: list[tuple[Patch, tuple[str, ...]]] = []

    def target(*names):
        return next((index.find(n) for n in names if index.find(n) is not None), None)

    def add(full: str, change, *keys) -> None:
        module, _, leaf = full.rpartition(".")
        made.append((Patch(attr, module, leaf, change), keys))

    pair = [parts[p] for p in ("down", "up", "alpha", "up_bias", "mid") if p in parts]
    full = target(f"{name}.weight")
    if "mid" in parts:
        failed.update(dict.fromkeys(pair, "LoCon mid (Tucker) tensors are not supported"))
    elif ("down" in parts) != ("up" in parts) or (pair and "down" not in parts):
        failed.update(dict.fromkeys(pair, "an incomplete LoRA pair (lora_up/lora_down or lora_A/lora_B missing)"))
    elif pair and full is not None:
        up, down = tensors[parts["up"]], tensors[parts["down"]]
        scale = _scale(parts, tensors, name, down.shape[0], alpha)
        change = low_rank(up, down, index.params[full], scale)
        if change is None:
            why = f"shapes {tuple(down.shape)} / {tuple(up.shape)} do not fit {full} {tuple(index.params[full].shape)}"
            failed.update(dict.fromkeys(pair, why))
        else:
            add(full, change, *(parts[p] for p in ("down", "up", "alpha") if p in parts))
            bias = target(f"{name}.bias")
            if "up_bias" in parts and bias is not None:
                add(bias, Delta(tensors[parts["up_bias"]] * scale), parts["up_bias"])
    for part, names in (("diff", (f"{name}.weight", name)), ("diff_b", (f"{name}.bias",)),
                        ("diff_m", (f"{name}.modulation",))):
        full = target(*names) if part in parts else None
        if full is None:
            continue
        delta = _fit(tensors[parts[part]], index.params[full].shape)
        if delta is None:
            failed[parts[part]] = (f"shape {tuple(tensors[parts[part]].shape)} does not fit {full} "
                                   f"{tuple(index.params[full].shape)}")
        else:
            add(full, Delta(delta), parts[part])
    return made
