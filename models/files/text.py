"""UMT5-XXL text encoders from ComfyUI's single files (`umt5_xxl_fp16`, `umt5_xxl_fp8_e4m3fn_scaled`, bf16), with
the tokenizer built from the file's own `spiece_model` tensor (the SentencePiece model bytes, ComfyUI's convention:
comfy/text_encoders/wan.py, comfy/sd.py).

Tokenizer: the SentencePiece proto is parsed with the protobuf schema transformers ships (no `sentencepiece`
package needed) and rebuilt as a `tokenizers` Unigram model the way SentencePiece tokenizes: the precompiled
NFKC charsmap (when the model has one), extra whitespace removed, `▁` prefixed and for spaces, `</s>` appended.
Model: transformers' UMT5EncoderModel (T5EncoderModel when only block 0 has a relative attention bias), its config
detected from the shapes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..checks import fail
from .formats import check_target_dtype, iter_keys, open_tensors, read_tensor

T5_PREFIXES = ("", "umt5xxl.transformer.", "t5xxl.transformer.", "text_encoders.umt5xxl.transformer.",
               "encoder_model.", "text_encoder.")
T5_MARK = "encoder.block.0.layer.0.SelfAttention.q.weight"


@dataclass
class TextEncoder:
    """A loaded text encoder: `tokenizer` (transformers fast tokenizer), `model` (UMT5EncoderModel) and the width
    of its output (`dim`, 4096 for UMT5-XXL)."""
    tokenizer: object
    model: torch.nn.Module
    dim: int
    path: Path


def tokenizer_from_spiece(model_bytes: bytes):
    """A transformers fast tokenizer equivalent to sentencepiece.SentencePieceProcessor(model_proto=model_bytes,
    add_eos=True) — ComfyUI's SPieceTokenizer for UMT5."""
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString(model_bytes)
    spec, norm = proto.trainer_spec, proto.normalizer_spec
    vocab = [(p.piece, p.score) for p in proto.pieces]
    tok = Tokenizer(Unigram(vocab, unk_id=spec.unk_id, byte_fallback=spec.byte_fallback))
    steps = []
    if norm.precompiled_charsmap:
        steps.append(normalizers.Precompiled(norm.precompiled_charsmap))
    if norm.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if steps:
        tok.normalizer = normalizers.Sequence(steps)
    scheme = "always" if norm.add_dummy_prefix else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme, split=True)
    eos = proto.pieces[spec.eos_id].piece if spec.eos_id >= 0 else None
    if eos:
        tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                           special_tokens=[(eos, spec.eos_id)])
    pad = proto.pieces[spec.pad_id].piece if spec.pad_id >= 0 else None
    unk = proto.pieces[spec.unk_id].piece if spec.unk_id >= 0 else None
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad, unk_token=unk)


def _t5_config(f, prefix: str) -> tuple[dict, bool]:
    keys = [k[len(prefix):] for k in f.keys() if k.startswith(prefix)]
    layers = 1 + max(int(k.split(".")[2]) for k in keys if k.startswith("encoder.block."))
    rel = f.shape(prefix + "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    heads = rel[1]
    gated = prefix + "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in f
    ff_key = "encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"
    umt5 = prefix + "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight" in f or layers == 1
    cfg = dict(vocab_size=f.shape(prefix + "shared.weight")[0], d_model=f.shape(prefix + "shared.weight")[1],
               d_kv=f.shape(prefix + "encoder.block.0.layer.0.SelfAttention.q.weight")[0] // heads,
               d_ff=f.shape(prefix + ff_key)[0], num_layers=layers, num_decoder_layers=layers, num_heads=heads,
               relative_attention_num_buckets=rel[0], relative_attention_max_distance=128,
               feed_forward_proj="gated-gelu" if gated else "relu", layer_norm_epsilon=1e-6,
               dropout_rate=0.0, tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
               decoder_start_token_id=0)
    return cfg, umt5


def _t5_layout(f, arg: str) -> tuple[str, str]:
    """(key prefix, spiece_model key) of a UMT5 file; refuses files that are not T5 encoders or carry no tokenizer."""
    prefix = next((p for p in T5_PREFIXES if p + T5_MARK in f), None)
    if prefix is None:
        fail(arg, "is not a T5/UMT5 text encoder file (no encoder.block.0.layer.0.SelfAttention.q.weight)",
             f.path.name, "Pick umt5_xxl_fp16.safetensors or umt5_xxl_fp8_e4m3fn_scaled.safetensors from "
                          "text_encoders/.")
    spiece_key = next((k for k in f.keys() if k == "spiece_model" or k.endswith(".spiece_model")), None)
    if spiece_key is None:
        fail(arg, "carries no tokenizer (no `spiece_model` tensor, which ComfyUI's UMT5 files hold)",
             f.path.name, "Use ComfyUI's repackaged umt5_xxl_fp16.safetensors or "
                          "umt5_xxl_fp8_e4m3fn_scaled.safetensors (both hold the tokenizer), or add the "
                          "SentencePiece model as a uint8 `spiece_model` tensor (UMT5's spiece.model).")
    return prefix, spiece_key


def inspect_text_encoder(path, arg: str = "text_encoder") -> int:
    """The width (d_model) of a UMT5 text encoder file, read from its header only (no weights): the same refusals
    as load_text_encoder (not a T5 file, no tokenizer), so a files loader can check a pairing before loading."""
    with open_tensors(path, arg) as f:
        prefix, _ = _t5_layout(f, arg)
        return f.shape(prefix + "shared.weight")[1]


def load_text_encoder(path, dtype: torch.dtype = torch.float32, device="cpu", arg: str = "text_encoder"):
    """A UMT5 (Wan's text side) text encoder and its tokenizer from one ComfyUI single file.

    Args:
        path: .safetensors file (ComfyUI's text_encoders/ or clip/): fp16, bf16 or scaled fp8 (de-scaled exactly).
        dtype, device: of the weights; tensors stream there one at a time.
    Returns: TextEncoder(tokenizer, model, dim, path); `encode_prompt` turns prompts into (B, 512, dim) embeddings.
    """
    from ..meta import init_empty_weights
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    with open_tensors(path, arg) as f:
        check_target_dtype(arg, f, dtype)
        prefix, spiece_key = _t5_layout(f, arg)
        tokenizer = tokenizer_from_spiece(f.get(spiece_key).numpy().tobytes())
        cfg, umt5 = _t5_config(f, prefix)
        with init_empty_weights():
            model = (UMT5EncoderModel(UMT5Config(**cfg)) if umt5 else T5EncoderModel(T5Config(**cfg)))
        expected = set(model.state_dict())
        sd = {}
        for k in iter_keys(f, prefix):
            name = k[len(prefix):]
            if name in expected:
                sd[name] = read_tensor(f, k, dtype, device)
        sd["encoder.embed_tokens.weight"] = sd["shared.weight"]  # tied in transformers' T5 encoders
        missing = sorted(expected - set(sd))
        if missing:
            fail(arg, "lacks tensors of the detected T5 encoder", f"{f.path.name}: {missing[:4]}",
                 "The file is incomplete; download it again.")
    model.load_state_dict(sd, strict=True, assign=True)
    model.encoder.embed_tokens = model.shared
    model.eval()
    return TextEncoder(tokenizer, model, cfg["d_model"], Path(path))


@torch.no_grad()
def encode_prompt(te: TextEncoder, prompts: list[str] | str, max_sequence_length: int = 512):
    """Prompt embeddings as Wan uses them (diffusers' WanPipeline and ComfyUI agree): tokens + `</s>`, encoded
    with the attention mask, positions after the prompt zeroed.

    Returns: (embeds (B, max_sequence_length, dim) float, lengths (B,) tokens per prompt incl. `</s>`).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    enc = te.tokenizer(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                       add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
    device = next(te.model.parameters()).device
    ids, mask = enc.input_ids.to(device), enc.attention_mask.to(device)
    out = te.model(ids, attention_mask=mask).last_hidden_state
    out = out * mask[..., None].to(out.dtype)  # (B, L, dim), zeros after each prompt
    return out, mask.sum(1)


def spiece_from_vocab(pieces: list[tuple[str, float]], unk_id: int, eos_id: int, pad_id: int) -> bytes:
    """A SentencePiece Unigram model (the bytes ComfyUI stores as `spiece_model`) for a vocabulary of (piece, score):
    no normaliser rules, a dummy `▁` prefix and extra whitespace removed, as SentencePiece's defaults. Used to give
    the fixture models' text encoder files a tokenizer (`kinema fixtures`)."""
    from transformers.convert_slow_tokenizer import import_protobuf
    pb = import_protobuf()
    proto = pb.ModelProto()
    specials = {unk_id: pb.ModelProto.SentencePiece.UNKNOWN, eos_id: pb.ModelProto.SentencePiece.CONTROL,
                pad_id: pb.ModelProto.SentencePiece.CONTROL}
    for i, (piece, score) in enumerate(pieces):
        proto.pieces.add(piece=piece, score=score, type=specials.get(i, pb.ModelProto.SentencePiece.NORMAL))
    proto.trainer_spec.model_type = pb.TrainerSpec.UNIGRAM
    proto.trainer_spec.unk_id, proto.trainer_spec.eos_id = unk_id, eos_id
    proto.trainer_spec.pad_id, proto.trainer_spec.bos_id = pad_id, -1
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = True
    proto.normalizer_spec.remove_extra_whitespaces = True
    proto.normalizer_spec.escape_whitespaces = True
    return proto.SerializeToString()
