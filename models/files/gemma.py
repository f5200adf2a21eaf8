"""LTX-2's text encoder from ComfyUI's single file: Gemma 3 (`text_encoders/gemma_3_12B_it*.safetensors`), its
tokenizer built from the file's own `spiece_model` tensor (ComfyUI's convention, comfy/text_encoders/lt.py).

The language model is read under any of the names it is stored with: ComfyUI's (`model.layers.N...`,
comfy/text_encoders/llama.py), a ComfyUI-saved CLIP (`gemma3_12b.transformer.model.`), transformers'
(`language_model.model.`, `model.language_model.`) or bare. The vision tower and projector are not needed (the LTX-2
pipelines encode text only) and are skipped. The model is transformers' Gemma3TextModel: LTX-2 stacks the hidden
states of every layer (diffusers' `_get_gemma_prompt_embeds`), which it returns exactly as Gemma3ForConditionalGeneration
does for text. Its config: the shapes from the file, what no shape tells (RoPE, sliding window, attention scale)
from configs/gemma3_12b.json.

Tokenizer: Gemma's SentencePiece BPE model (byte fallback, no dummy prefix) rebuilt as a `tokenizers` BPE by
transformers' own SentencePiece converter (no `sentencepiece` package needed), `<bos>` added first as Gemma's
tokenizer does. A file without `spiece_model` takes `tokenizer.model` from its own folder; without either it is
refused, naming that one file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checks import fail
from .detect import CONFIGS
from .formats import check_target_dtype, is_aux_key, open_tensors
from .ltx2 import read_ltx_tensor

GEMMA_PREFIXES = ("model.", "gemma3_12b.transformer.model.", "model.language_model.", "language_model.model.", "")
GEMMA_MARK = "layers.0.self_attn.q_proj.weight"
TOKENIZER_FILE = "tokenizer.model"
TOKENIZER_FIX = (f"Use ComfyUI's gemma_3_12B_it.safetensors (it carries its tokenizer as `spiece_model`), or put "
                 f"Gemma 3's {TOKENIZER_FILE} (from google/gemma-3-12b-it) in the same folder as this file.")


@dataclass
class GemmaEncoder:
    """A loaded Gemma 3 text encoder: `tokenizer` (transformers fast tokenizer, `<bos>` first, left padding as the
    LTX-2 pipelines set), `model` (Gemma3TextModel) and the file it came from."""
    tokenizer: object
    model: torch.nn.Module
    path: Path


def gemma_prefix(f) -> str | None:
    """The key prefix of a Gemma language model in the file, or None when it holds none."""
    return next((p for p in GEMMA_PREFIXES if p + GEMMA_MARK in f and p + "embed_tokens.weight" in f), None)


def _gemma_layout(f, arg: str) -> str:
    prefix = gemma_prefix(f)
    if prefix is None:
        what = ("an LTX-2 all-in-one checkpoint" if any(k.startswith("audio_vae.") for k in f.keys()) else
                "a T5/UMT5 text encoder" if any("SelfAttention.q.weight" in k for k in f.keys()) else
                "not a Gemma 3 text encoder")
        fail(arg, f"must be LTX-2's Gemma 3 text encoder file (layers.0.self_attn.q_proj and embed_tokens); this is "
                  f"{what}", f.path.name, "Pick gemma_3_12B_it*.safetensors from text_encoders/ (the checkpoint "
                                          "goes to the checkpoint input).")
    if prefix + "layers.0.self_attn.q_norm.weight" not in f:
        fail(arg, "is a Gemma model without q/k norms (Gemma 1 or 2); LTX-2 uses Gemma 3", f.path.name,
             "Pick gemma_3_12B_it*.safetensors from text_encoders/.")
    return prefix


def _count(keys, prefix: str) -> int:
    ids = {int(k[len(prefix):].split(".", 1)[0]) for k in keys if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def gemma_text_config(f, prefix: str, fixture: dict | None = None) -> dict:
    """Gemma3TextConfig fields: the shapes from the file, the rest from configs/gemma3_12b.json (or, for Kinema's
    tiny test files, from their metadata)."""
    if fixture:
        return dict(fixture)
    cfg = dict(json.loads((CONFIGS / "gemma3_12b.json").read_text())["text_config"])
    vocab, hidden = f.shape(prefix + "embed_tokens.weight")
    head_dim = f.shape(prefix + "layers.0.self_attn.q_norm.weight")[0]
    cfg.update(vocab_size=vocab, hidden_size=hidden, head_dim=head_dim,
               num_hidden_layers=_count(f.keys(), prefix + "layers."),
               num_attention_heads=f.shape(prefix + "layers.0.self_attn.q_proj.weight")[0] // head_dim,
               num_key_value_heads=f.shape(prefix + "layers.0.self_attn.k_proj.weight")[0] // head_dim,
               intermediate_size=f.shape(prefix + "layers.0.mlp.gate_proj.weight")[0])
    return cfg


def gemma_tokenizer_from_spiece(model_bytes: bytes, model_max_length: int = 1024):
    """A fast tokenizer equal to sentencepiece.SentencePieceProcessor(model_proto=model_bytes) with `<bos>` first
    (Gemma's tokenizer; ComfyUI's SPieceTokenizer(add_bos=True))."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(model_bytes)
    spec = proto.trainer_spec
    if spec.model_type != 2:   # BPE
        fail("text_encoder", "carries a SentencePiece model that is not BPE (Gemma's is)", f"type {spec.model_type}",
             TOKENIZER_FIX)
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    tok = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab, legacy=False)

    def piece(i):
        return proto.pieces[i].piece if i >= 0 else None

    bos = piece(spec.bos_id)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, spec.bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=piece(spec.eos_id),
                                   pad_token=piece(spec.pad_id), unk_token=piece(spec.unk_id),
                                   model_max_length=model_max_length, padding_side="left")


def gemma_tokenizer_bytes(f, arg: str) -> bytes:
    """The SentencePiece model: the file's `spiece_model` tensor, else `tokenizer.model` beside the file."""
    key = next((k for k in f.keys() if k == "spiece_model" or k.endswith(".spiece_model")), None)
    if key is not None:
        return f.get(key).numpy().tobytes()
    beside = f.path.parent / TOKENIZER_FILE
    if beside.is_file():
        return beside.read_bytes()
    fail(arg, f"carries no tokenizer (no `spiece_model` tensor) and there is no {TOKENIZER_FILE} beside it",
         f.path.name, TOKENIZER_FIX)


def _check_quantised(f, prefix: str, own: dict, arg: str) -> None:
    """Refuse weights stored in a form Kinema does not de-quantise (ComfyUI's fp4 `*_fp4_mixed` files pack two
    values a byte): their shapes or dtypes differ from the model's."""
    odd = [k for k, v in own.items() if prefix + k in f and (f.shape(prefix + k) != tuple(v.shape) or
                                                             not f.dtype(prefix + k).is_floating_point)]
    if odd:
        fail(arg, "holds quantised weights Kinema does not read (packed fp4 or another block format)",
             f"{f.path.name}: {odd[:2]}", "Use gemma_3_12B_it.safetensors (bf16) or an fp8 file "
                                          "(gemma_3_12B_it_fp8_scaled / _fp8_e4m3fn).")


def inspect_gemma(path, arg: str = "text_encoder") -> int:
    """The hidden width of a Gemma 3 file, from its header only, with load_gemma's refusals (not Gemma 3, no
    tokenizer), so a loader can check the pairing before reading any weight."""
    with open_tensors(path, arg) as f:
        prefix = _gemma_layout(f, arg)
        gemma_tokenizer_bytes(f, arg)
        return f.shape(prefix + "embed_tokens.weight")[1]


def load_gemma(path, dtype: torch.dtype = torch.float32, device="cpu", arg: str = "text_encoder",
               fixture: dict | None = None) -> GemmaEncoder:
    """Gemma 3 (text) and its tokenizer from one ComfyUI single file.

    Args:
        path: .safetensors (text_encoders/): bf16/fp16/fp32, or fp8 with per-tensor scales (ComfyUI's
            `scale_weight`, or `weight_scale`), de-scaled exactly. Packed fp4 files are refused.
        dtype, device: of the weights; tensors stream there one at a time.
        fixture: the config of a Kinema test file (its metadata), None for published files.
    Returns: GemmaEncoder; model(input_ids (B, L), attention_mask (B, L), output_hidden_states=True).hidden_states
    is layers + 1 tensors (B, L, hidden).
    """
    from ..meta import init_empty_weights
    from transformers import Gemma3TextConfig, Gemma3TextModel

    with open_tensors(path, arg) as f:
        check_target_dtype(arg, f, dtype)
        prefix = _gemma_layout(f, arg)
        tokenizer = gemma_tokenizer_from_spiece(gemma_tokenizer_bytes(f, arg))
        cfg = gemma_text_config(f, prefix, fixture)
        with init_empty_weights():
            model = Gemma3TextModel(Gemma3TextConfig(**cfg))
        own = model.state_dict()
        expected = set(own)
        _check_quantised(f, prefix, own, arg)
        sd = {}
        for k in f.keys():
            name = k[len(prefix):]
            if k.startswith(prefix) and name in expected and not is_aux_key(k):
                sd[name] = read_ltx_tensor(f, k, dtype, device)
        missing = sorted(expected - set(sd))
        if missing:
            fail(arg, "lacks tensors of the detected Gemma 3 model", f"{f.path.name}: {missing[:4]}",
                 "The file is incomplete; download it again.")
    model.load_state_dict(sd, strict=True, assign=True)
    model.eval()
    return GemmaEncoder(tokenizer, model, Path(path))
