"""Make tests/data/ltx2: a tiny LTX-2 all-in-one checkpoint and Gemma 3 text-encoder file in ComfyUI's layouts, and
reference outputs on fixed inputs, for Kinema's LTX-2 single-file loader (kinema.models.files.ltx2).

Producer (see PRODUCER.md there): ComfyUI's own LTX-2 classes (comfy/ldm/lightricks, comfy/text_encoders/lt.py) need
a ComfyUI newer than the reference checkout (0.3.64 predates LTX-2) and hard-code Gemma 3 12B's sizes, so this
script falls back to diffusers' own LTX-2 code as the independent producer:
- the modules are diffusers 0.42.1's LTX-2 classes at a tiny config (4-level video VAE as LTX-2's, so diffusers'
  converter applies), seeded;
- the checkpoint's key layout is LTX-2's original one (the one ComfyUI's LTX-2 code loads: `model.diffusion_model.`
  transformer + `video_embeddings_connector` / `audio_embeddings_connector`, `text_embedding_projection.
  aggregate_embed`, `vae.` with `per_channel_statistics`, `audio_vae.`, `vocoder.` with ups/resblocks/conv_pre/
  conv_post), written by inverting diffusers' conversion tables; the script ASSERTS that diffusers' own single-file
  converters (convert_ltx2_transformer_to_diffusers, convert_ltx2_vae_to_diffusers,
  convert_ltx2_audio_vae_to_diffusers) map every written key back to the module's, and the names ComfyUI's
  av_model.py / embeddings_connector.py use are checked present;
- the reference outputs come from modules rebuilt from the WRITTEN file by diffusers' converters (vocoder and
  connectors, which diffusers 0.42 has no single-file converter for, by the tables of diffusers'
  scripts/convert_ltx2_to_diffusers.py);
- the Gemma 3 file holds the language model under ComfyUI's names (`model.layers.N...`, comfy/text_encoders/llama.py)
  and a SentencePiece BPE model trained here with Gemma's settings (byte fallback, no dummy prefix, bos 2) as the
  uint8 `spiece_model` tensor; its reference tokens come from `sentencepiece` itself, its hidden states from
  transformers' Gemma3ForConditionalGeneration.

    /work/comfyref/.venv/bin/python tools/make_ltx2_reference.py --out tests/data/ltx2

Then tools/check_ltx2_with_ltx_core.py runs Lightricks' own LTX-2 code (ltx-core) on the written checkpoint, through
ltx-core's own key maps, and checks it reproduces every reference output (ltx_core_check.json, PRODUCER.md).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

TRANSFORMER = dict(in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
                   attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
                   audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8,
                   num_layers=2, qk_norm="rms_norm_across_heads", caption_channels=16, rope_double_precision=True,
                   rope_type="split")
CONNECTORS = dict(caption_channels=16, text_proj_in_factor=3, video_connector_num_attention_heads=2,
                  video_connector_attention_head_dim=8, video_connector_num_layers=1,
                  video_connector_num_learnable_registers=4, audio_connector_num_attention_heads=2,
                  audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
                  audio_connector_num_learnable_registers=4, connector_rope_base_seq_len=32, rope_theta=10000.0,
                  rope_double_precision=True, causal_temporal_positioning=False, rope_type="split")
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 32, 64),
           decoder_block_out_channels=(8, 16, 32), layers_per_block=(1, 1, 1, 1, 1),
           decoder_layers_per_block=(1, 1, 1, 1), spatio_temporal_scaling=(True, True, True, True),
           decoder_spatio_temporal_scaling=(True, True, True), decoder_inject_noise=(False, False, False, False),
           downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
           upsample_residual=(True, True, True), upsample_factor=(2, 2, 2), timestep_conditioning=False,
           patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False, spatial_compression_ratio=8,
           temporal_compression_ratio=8)
AUDIO_VAE = dict(base_channels=4, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=2, attn_resolutions=None,
                 in_channels=2, resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height",
                 dropout=0.0, mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True,
                 mel_bins=8)
VOCODER = dict(in_channels=16, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[20, 32],
               upsample_factors=[10, 16], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
               leaky_relu_negative_slope=0.1, output_sampling_rate=16000)
GEMMA = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
             head_dim=8, max_position_embeddings=1024, sliding_window=64, query_pre_attn_scalar=8,
             layer_types=["sliding_attention", "full_attention"], pad_token_id=0, eos_token_id=1, bos_token_id=2)
PROMPTS = ["a red fox runs through fresh snow at dawn", "Zwei Katzen spielen im Garten, 123 slow motion!"]
SEQ = 24   # Gemma tokens per prompt in the reference (left padded, as the LTX-2 pipelines pad)

# diffusers name -> LTX-2's original name (the inverse of diffusers' tables; checked by its converters below)
TRANSFORMER_BACK = [("audio_time_embed.", "audio_adaln_single."), ("time_embed.", "adaln_single."),
                    ("proj_in", "patchify_proj"),
                    ("av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single"),
                    ("av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single"),
                    ("av_cross_attn_audio_scale_shift", "av_ca_audio_scale_shift_adaln_single"),
                    ("av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single"),
                    ("video_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_video"),
                    ("audio_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_audio"),
                    ("norm_q", "q_norm"), ("norm_k", "k_norm")]
# names ComfyUI's LTX-2 classes (comfy/ldm/lightricks/av_model.py, embeddings_connector.py) define
COMFY_NAMES = ["model.diffusion_model.audio_patchify_proj.weight", "model.diffusion_model.patchify_proj.weight",
               "model.diffusion_model.audio_adaln_single.linear.weight",
               "model.diffusion_model.av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight",
               "model.diffusion_model.transformer_blocks.0.scale_shift_table_a2v_ca_audio",
               "model.diffusion_model.transformer_blocks.0.audio_to_video_attn.q_norm.weight",
               "model.diffusion_model.transformer_blocks.0.video_to_audio_attn.to_q.weight",
               "model.diffusion_model.audio_caption_projection.linear_1.weight",
               "model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.k_norm.weight",
               "model.diffusion_model.audio_embeddings_connector.learnable_registers",
               "text_embedding_projection.aggregate_embed.weight", "vae.per_channel_statistics.mean-of-means",
               "audio_vae.per_channel_statistics.mean-of-means", "vocoder.conv_pre.weight", "vocoder.ups.0.weight",
               "vocoder.resblocks.0.convs1.0.weight", "vocoder.conv_post.weight"]


def seeded(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter and buffer of a module drawn from a seed (norm weights near 1): no zero-initialised layer
    hides a wrong mapping."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.state_dict(keep_vars=True).items():
            if not p.is_floating_point():
                continue
            r = torch.randn(p.shape, generator=g)
            if p.ndim == 1 and ("norm" in name or name.endswith("latents_std")):
                p.copy_(1.0 + 0.1 * r)
            elif p.ndim == 1:
                p.copy_(0.05 * r)
            else:
                p.copy_(r / max(p[0].numel(), 1) ** 0.5)
    return module.eval()


def _rename(name: str, table) -> str:
    for a, b in table:
        name = name.replace(a, b)
    return name


def vae_back(name: str) -> str:
    """diffusers' AutoencoderKLLTX2Video name -> LTX-2's (4 encoder levels + mid, mid + 3 decoder levels)."""
    p = name.split(".")
    if p[0] == "latents_mean":
        return "per_channel_statistics.mean-of-means"
    if p[0] == "latents_std":
        return "per_channel_statistics.std-of-means"
    if p[1] == "mid_block":
        p[1:2] = ["down_blocks" if p[0] == "encoder" else "up_blocks", "8" if p[0] == "encoder" else "0"]
    elif p[1] == "down_blocks":
        i = int(p[2])
        if p[3] == "downsamplers":
            p[2:5] = [str(2 * i + 1)]
        else:
            p[2] = str(2 * i)
    elif p[1] == "up_blocks":
        i = int(p[2])
        if p[3] == "upsamplers":
            p[2:5] = [str(2 * i + 1)]
        else:
            p[2] = str(2 * i + 2)
    return ".".join(p).replace("resnets", "res_blocks")


def write_checkpoint(parts: dict, path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file
    sd = {}
    for k, v in parts["transformer"].state_dict().items():
        sd["model.diffusion_model." + _rename(k, TRANSFORMER_BACK)] = v
    for k, v in parts["connectors"].state_dict().items():
        if k == "text_proj_in.weight":
            sd["text_embedding_projection.aggregate_embed.weight"] = v
            continue
        k = k.replace("video_connector.", "video_embeddings_connector.").replace(
            "audio_connector.", "audio_embeddings_connector.").replace("transformer_blocks", "transformer_1d_blocks")
        sd["model.diffusion_model." + k.replace("norm_q", "q_norm").replace("norm_k", "k_norm")] = v
    for k, v in parts["vae"].state_dict().items():
        sd["vae." + vae_back(k)] = v
    c = parts["vae"].config.latent_channels
    sd["vae.per_channel_statistics.channel"] = torch.arange(c, dtype=torch.float32)   # dropped by the converters
    sd["vae.per_channel_statistics.mean-of-stds"] = torch.ones(c)
    for k, v in parts["audio_vae"].state_dict().items():
        sd["audio_vae." + k.replace("latents_mean", "per_channel_statistics.mean-of-means").replace(
            "latents_std", "per_channel_statistics.std-of-means")] = v
    for k, v in parts["vocoder"].state_dict().items():
        sd["vocoder." + _rename(k, [("upsamplers", "ups"), ("resnets", "resblocks"), ("conv_in", "conv_pre"),
                                    ("conv_out", "conv_post")])] = v
    missing = [n for n in COMFY_NAMES if n not in sd]
    assert not missing, missing
    sd = {k: v.contiguous().clone() for k, v in sd.items()}
    save_file(sd, str(path), metadata={"kinema_fixture": json.dumps(configs_meta())})
    return sd


def configs_meta() -> dict:
    def lists(d):
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}
    return {"ltx2": {"transformer": lists(TRANSFORMER), "connectors": CONNECTORS, "vae": lists(VAE),
                     "audio_vae": lists(AUDIO_VAE), "vocoder": VOCODER}}


def rebuild(sd: dict) -> dict:
    """The modules rebuilt from the written checkpoint by diffusers' own converters (see the module docstring)."""
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
    from diffusers.loaders.single_file_utils import (convert_ltx2_audio_vae_to_diffusers,
                                                     convert_ltx2_transformer_to_diffusers,
                                                     convert_ltx2_vae_to_diffusers)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    def pick(prefix):
        return {k: v.clone() for k, v in sd.items() if k.startswith(prefix)}

    out = {}
    tr = convert_ltx2_transformer_to_diffusers(pick("model.diffusion_model."))
    vae = convert_ltx2_vae_to_diffusers(pick("vae."))
    avae = convert_ltx2_audio_vae_to_diffusers(pick("audio_vae."))
    voc = {_rename(k[len("vocoder."):], [("ups", "upsamplers"), ("resblocks", "resnets"), ("conv_pre", "conv_in"),
                                          ("conv_post", "conv_out")]): v for k, v in pick("vocoder.").items()}
    con = {"text_proj_in.weight": sd["text_embedding_projection.aggregate_embed.weight"]}
    for k, v in pick("model.diffusion_model.").items():
        k = k[len("model.diffusion_model."):]
        if k.startswith(("video_embeddings_connector", "audio_embeddings_connector")):
            k = _rename(k, [("video_embeddings_connector", "video_connector"),
                            ("audio_embeddings_connector", "audio_connector"),
                            ("transformer_1d_blocks", "transformer_blocks"), ("q_norm", "norm_q"),
                            ("k_norm", "norm_k")])
            con[k] = v
    for name, cls, weights, cfg in (("transformer", LTX2VideoTransformer3DModel, tr, TRANSFORMER),
                                    ("vae", AutoencoderKLLTX2Video, vae, VAE),
                                    ("audio_vae", AutoencoderKLLTX2Audio, avae, AUDIO_VAE),
                                    ("vocoder", LTX2Vocoder, voc, VOCODER),
                                    ("connectors", LTX2TextConnectors, con, CONNECTORS)):
        m = cls(**cfg)
        m.load_state_dict(weights, strict=True)
        out[name] = m.eval()
    return out


def train_gemma_spm(work: Path) -> bytes:
    """A SentencePiece BPE model with Gemma 3's settings: pad 0, eos 1, bos 2, unk 3, byte fallback, digits split,
    no normaliser, no dummy prefix, whitespace kept."""
    import sentencepiece as spm
    words = ("a red fox runs through fresh snow at dawn the cat dog bird flies over river mountain city night "
             "light slow motion camera pans left right close up wide shot sunset ocean waves forest rain "
             "zwei katzen spielen im garten der die das und ein eine video film scene people walking").split()
    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(words, size=rng.integers(4, 12))) for _ in range(2000)]
    lines += [w.capitalize() + "." for w in words] + ["123 456, 7.5!"] * 10
    corpus = work / "corpus.txt"
    corpus.write_text("\n".join(lines), encoding="utf-8")
    prefix = str(work / "gemma_spm")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=prefix, vocab_size=420, model_type="bpe", pad_id=0, eos_id=1, bos_id=2,
        unk_id=3, byte_fallback=True, split_digits=True, character_coverage=1.0, normalization_rule_name="identity",
        add_dummy_prefix=False, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"], minloglevel=2)
    return Path(prefix + ".model").read_bytes()


def make_gemma(out: Path, ref: dict, work: Path) -> dict:
    import sentencepiece as spm
    from safetensors.torch import save_file
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration
    model_bytes = train_gemma_spm(work)
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    cfg = Gemma3Config(text_config=dict(GEMMA, vocab_size=sp.get_piece_size()),
                       vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                          num_attention_heads=2, image_size=16, patch_size=8),
                       mm_tokens_per_image=4, image_token_index=sp.get_piece_size() - 1)
    torch.manual_seed(0)
    model = seeded(Gemma3ForConditionalGeneration(cfg), 5)
    lm = "model.language_model."
    sd = {"model." + k[len(lm):]: v.contiguous().clone() for k, v in model.state_dict().items() if k.startswith(lm)}
    sd["spiece_model"] = torch.frombuffer(bytearray(model_bytes), dtype=torch.uint8)
    sd["vision_model.embeddings.patch_embedding.weight"] = torch.zeros(16, 3, 8, 8)   # ComfyUI's file has a tower
    meta = {"kinema_fixture": json.dumps({"gemma3_text": dict(GEMMA, vocab_size=sp.get_piece_size())})}
    save_file(sd, str(out / "gemma3_tiny.safetensors"), metadata=meta)
    tokens = []
    ids = torch.zeros(len(PROMPTS), SEQ, dtype=torch.long)
    mask = torch.zeros(len(PROMPTS), SEQ, dtype=torch.long)
    for i, p in enumerate(PROMPTS):
        t = [sp.bos_id()] + sp.encode(p)          # ComfyUI's Gemma tokenizer and HF's add <bos> first
        tokens.append(t)
        ids[i, SEQ - len(t):], mask[i, SEQ - len(t):] = torch.tensor(t), 1   # left padding with pad 0
    with torch.no_grad():
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    ref["gemma.ids"], ref["gemma.mask"] = ids, mask
    ref["gemma.embeds"] = torch.stack(hs, dim=-1).flatten(2, 3).float()      # (B, SEQ, hidden * (layers + 1))
    return {"prompts": PROMPTS, "tokens": tokens, "seq": SEQ}


@torch.no_grad()
def run_reference(m: dict, ref: dict) -> None:
    g = torch.Generator().manual_seed(1)
    f, h, w, steps = 2, 2, 2, 5
    ref["tr.video"] = torch.randn(1, f * h * w, 4, generator=g)
    ref["tr.audio"] = torch.randn(1, steps, 4, generator=g)
    ref["tr.text"] = torch.randn(1, 6, 16, generator=g)
    ref["tr.audio_text"] = torch.randn(1, 6, 16, generator=g)
    ref["tr.t"] = torch.tensor([0.7])
    video, audio = m["transformer"](
        hidden_states=ref["tr.video"], audio_hidden_states=ref["tr.audio"], encoder_hidden_states=ref["tr.text"],
        audio_encoder_hidden_states=ref["tr.audio_text"], timestep=ref["tr.t"], num_frames=f, height=h, width=w,
        fps=24.0, audio_num_frames=steps, return_dict=False)
    ref["tr.out_video"], ref["tr.out_audio"] = video, audio
    ref["vae.x"] = torch.rand(1, 3, 9, 16, 16, generator=g) * 2 - 1
    ref["vae.latent"] = m["vae"].encode(ref["vae.x"]).latent_dist.mode()
    ref["vae.z"] = torch.randn(1, 4, 2, 2, 2, generator=g)
    ref["vae.decoded"] = m["vae"].decode(ref["vae.z"], return_dict=False)[0]
    ref["avae.z"] = torch.randn(1, 2, 6, 2, generator=g)
    ref["avae.mel"] = m["audio_vae"].decode(ref["avae.z"], return_dict=False)[0]
    ref["avae.latent"] = m["audio_vae"].encode(ref["avae.mel"]).latent_dist.mode()
    ref["voc.wave"] = m["vocoder"](ref["avae.mel"])
    ref["con.embeds"] = torch.randn(1, 8, 16 * 3, generator=g)
    ref["con.mask"] = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1]])
    v, a, mask = m["connectors"](ref["con.embeds"], ref["con.mask"], padding_side="left")
    ref["con.video"], ref["con.audio"], ref["con.out_mask"] = v, a, mask.float()
    ref["mean.vae"], ref["std.vae"] = m["vae"].latents_mean.clone(), m["vae"].latents_std.clone()


def main() -> None:
    import diffusers
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    from safetensors.torch import save_file
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=Path(__file__).resolve().parents[1] / "tests" / "data" / "ltx2", type=Path)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    parts = {"transformer": seeded(LTX2VideoTransformer3DModel(**TRANSFORMER), 1),
             "connectors": seeded(LTX2TextConnectors(**CONNECTORS), 2),
             "vae": seeded(AutoencoderKLLTX2Video(**VAE), 3),
             "audio_vae": seeded(AutoencoderKLLTX2Audio(**AUDIO_VAE), 4),
             "vocoder": seeded(LTX2Vocoder(**VOCODER), 6)}
    sd = write_checkpoint(parts, a.out / "ltx2_tiny.safetensors")
    rebuilt = rebuild(sd)
    for name, module in parts.items():   # the converters gave back exactly the modules' weights
        theirs = rebuilt[name].state_dict()
        for k, v in module.state_dict().items():
            assert torch.equal(theirs[k], v), (name, k)
    ref = {}
    run_reference(rebuilt, ref)
    with tempfile.TemporaryDirectory() as tmp:
        gemma = make_gemma(a.out, ref, Path(tmp))
    save_file({k: v.contiguous() for k, v in ref.items()}, str(a.out / "reference.safetensors"))
    meta = {"gemma": gemma, **configs_meta()}
    (a.out / "reference.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    import transformers
    (a.out / "PRODUCER.md").write_text(
        "# Producer of these files\n\ntools/make_ltx2_reference.py (read its docstring): diffusers "
        f"{diffusers.__version__}'s LTX-2 classes and single-file converters as the independent producer, "
        f"transformers {transformers.__version__}'s Gemma 3, sentencepiece's BPE trainer and tokenizer, torch "
        f"{torch.__version__} on CPU. ComfyUI's own LTX-2 classes were not run: the reference ComfyUI (0.3.64) "
        f"predates LTX-2. Key names are LTX-2's original layout, the one ComfyUI's comfy/ldm/lightricks code loads.\n")
    total = sum(p.stat().st_size for p in a.out.iterdir())
    print(f"wrote {len(list(a.out.iterdir()))} files, {total / 1e6:.2f} MB to {a.out}")


if __name__ == "__main__":
    main()
