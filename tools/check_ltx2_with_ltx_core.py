"""Check tests/data/ltx2 with Lightricks' own LTX-2 code (ltx-core, github.com/Lightricks/LTX-2, never committed
here): its model classes, built at the tiny file's sizes, take the checkpoint's tensors through ltx-core's OWN
key maps (the SDOps its loader applies to LTX-2 checkpoints: LTXV_MODEL_COMFY_RENAMING_MAP,
VAE_ENCODER/DECODER_COMFY_KEYS_FILTER, AUDIO_VAE_DECODER/ENCODER_COMFY_KEYS_FILTER, VOCODER_COMFY_KEYS_FILTER,
EMBEDDINGS_PROCESSOR_KEY_OPS), strictly (every name and shape must match), and their outputs on the reference
inputs are compared with reference.safetensors (which Kinema's loader reproduces in tests/models/test_files_ltx2.py).

    /work/comfyref/.venv/bin/python tools/check_ltx2_with_ltx_core.py --ltx-core <LTX-2 checkout>/packages/ltx-core/src

(needs diffusers 0.42.1 there too: diffusers' LTX-2 computes the reference call's RoPE coordinates).

Writes tests/data/ltx2/ltx_core_check.json: the largest difference per output and the ltx-core commit; and
ltx2_19b_layout.json.gz: every key and shape of an LTX-2 19B checkpoint as ltx-core's classes define them at LTX-2's
sizes (built on the meta device), which the tests map onto configs/ltx2_19b.json.
Tiny-size adaptations (ltx-core hard-codes the 19B vocoder's 128 input channels): noted in the JSON.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "ltx2"
# the values ltx-core's configurator insists on (LTX-2's own)
LTX_FIXED = {"dropout": 0.0, "attention_bias": True, "num_vector_embeds": None, "activation_fn": "gelu-approximate",
             "num_embeds_ada_norm": 1000, "use_linear_projection": False, "only_cross_attention": False,
             "cross_attention_norm": True, "double_self_attention": False, "upcast_attention": False,
             "standardization_norm": "rms_norm", "norm_elementwise_affine": False, "qk_norm": "rms_norm",
             "positional_embedding_type": "rope", "use_audio_video_cross_attention": True, "share_ff": False,
             "av_cross_ada_norm": True, "use_middle_indices_grid": True, "rope_type": "split",
             "frequencies_precision": "float64", "av_ca_timestep_scale_multiplier": 1000}
TRANSFORMER = {"num_attention_heads": 2, "attention_head_dim": 8, "in_channels": 4, "out_channels": 4, "num_layers": 2,
               "cross_attention_dim": 16, "audio_num_attention_heads": 2, "audio_attention_head_dim": 4,
               "audio_in_channels": 4, "audio_out_channels": 4, "audio_cross_attention_dim": 8, "caption_channels": 16,
               "connector_num_attention_heads": 2, "connector_attention_head_dim": 8, "connector_num_layers": 1,
               "connector_positional_embedding_max_pos": [32], **LTX_FIXED}
VAE = {"latent_channels": 4, "patch_size": 1, "dims": 3, "norm_layer": "pixel_norm", "latent_log_var": "uniform",
       "encoder_spatial_padding_mode": "zeros", "causal_decoder": False,   # the decoder pads by reflection (default)
       "timestep_conditioning": False, "decoder_base_channels": 4,
       "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": 2}],
                          ["res_x", {"num_layers": 1}], ["compress_time_res", {"multiplier": 2}],
                          ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                          ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
                          ["res_x", {"num_layers": 1}]],
       "decoder_blocks": [["res_x", {"num_layers": 1}], ["compress_all", {"residual": True, "multiplier": 2}],
                          ["res_x", {"num_layers": 1}], ["compress_all", {"residual": True, "multiplier": 2}],
                          ["res_x", {"num_layers": 1}], ["compress_all", {"residual": True, "multiplier": 2}],
                          ["res_x", {"num_layers": 1}]]}
AUDIO_VAE = {"model": {"params": {"sampling_rate": 16000, "ddconfig": {
    "ch": 4, "out_ch": 2, "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [], "resolution": 32,
    "z_channels": 2, "double_z": True, "in_channels": 2, "norm_type": "pixel", "causality_axis": "height",
    "dropout": 0.0, "mid_block_add_attention": False, "mel_bins": 8}}},
    "preprocessing": {"stft": {"hop_length": 160, "causal": True, "filter_length": 1024}}}
VOCODER = {"resblock_kernel_sizes": [3], "upsample_rates": [10, 16], "upsample_kernel_sizes": [20, 32],
           "resblock_dilation_sizes": [[1, 3, 5]], "upsample_initial_channel": 32, "resblock": "1", "stereo": True,
           "output_sampling_rate": 16000}


def load(module, sd: dict, ops, name: str, report: dict, exclude: str = "") -> None:
    """The file's tensors through ltx-core's key map, loaded strictly (names and shapes); `exclude`: keys the map
    also matches that belong to another ltx-core module (the connectors, under the transformer's prefix)."""
    mapped = {}
    for k, v in sd.items():
        if exclude and exclude in k:
            continue
        renamed = ops.apply_to_key(k)            # as ltx-core's loader: rename, then the key/value operations
        if renamed is not None:
            mapped.update(dict(ops.apply_to_key_value(renamed, v)))
    unused = sorted(k for k in mapped if k.startswith("per_channel_statistics.") and k not in module.state_dict())
    for k in unused:       # `channel`, `mean-of-stds`: in LTX-2's files, no place in ltx-core's (or diffusers') VAEs
        del mapped[k]
    own = module.state_dict()
    missing, extra = sorted(set(own) - set(mapped)), sorted(set(mapped) - set(own))
    assert not missing and not extra, (name, missing[:5], extra[:5])
    module.load_state_dict(mapped, strict=True, assign=True)
    module.eval()
    report["tensors"][name] = len(mapped)


def diff(report: dict, name: str, a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape, (name, a.shape, b.shape)
    report["max_abs_diff"][name] = float((a.float() - b.float()).abs().max())
    report["max_abs_ref"][name] = float(b.abs().max())


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ltx-core", required=True, type=Path, help="packages/ltx-core/src of a Lightricks/LTX-2 checkout")
    ap.add_argument("--commit", default="", help="the LTX-2 commit checked out (when --ltx-core is no git work tree)")
    a = ap.parse_args()
    sys.path.insert(0, str(a.ltx_core))
    from safetensors.torch import load_file
    from ltx_core.model.audio_vae.model_configurator import (AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
                                                             AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
                                                             VOCODER_COMFY_KEYS_FILTER, AudioDecoderConfigurator,
                                                             AudioEncoderConfigurator, VocoderConfigurator)
    from ltx_core.model.transformer.modality import Modality
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator, LTXV_MODEL_COMFY_RENAMING_MAP
    from ltx_core.model.video_vae.model_configurator import (VAE_DECODER_COMFY_KEYS_FILTER,
                                                             VAE_ENCODER_COMFY_KEYS_FILTER, VideoDecoderConfigurator,
                                                             VideoEncoderConfigurator)
    from ltx_core.text_encoders.gemma.embeddings_connector import Embeddings1DConnector
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.encoders.encoder_configurator import (EMBEDDINGS_PROCESSOR_KEY_OPS,
                                                                            _create_feature_extractor)
    from transformers import Gemma3TextConfig

    sd = load_file(str(DATA / "ltx2_tiny.safetensors"))
    ref = load_file(str(DATA / "reference.safetensors"))
    meta = {"config": {"transformer": TRANSFORMER, "vae": VAE, "audio_vae": AUDIO_VAE, "vocoder": VOCODER}}
    report = {"tensors": {}, "max_abs_diff": {}, "max_abs_ref": {}, "notes": []}

    # transformer: ltx-core's Modality with the coordinates diffusers' LTX-2 computes for the reference call
    # (sigma = timestep / 1000: diffusers takes timesteps already scaled by timestep_scale_multiplier)
    from diffusers import LTX2VideoTransformer3DModel
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import make_ltx2_reference as R
    coords = LTX2VideoTransformer3DModel(**R.TRANSFORMER)
    vc = coords.rope.prepare_video_coords(1, 2, 2, 2, torch.device("cpu"), fps=24.0)
    ac = coords.audio_rope.prepare_audio_coords(1, 5, torch.device("cpu"))
    model = LTXModelConfigurator.from_metadata(meta)
    load(model, sd, LTXV_MODEL_COMFY_RENAMING_MAP, "transformer", report, exclude="embeddings_connector")
    s = ref["tr.t"] / 1000
    vx, ax = model(Modality(latent=ref["tr.video"], sigma=s, timesteps=s.expand(1, 8), positions=vc,
                            context=ref["tr.text"]),
                   Modality(latent=ref["tr.audio"], sigma=s, timesteps=s.expand(1, 5), positions=ac,
                            context=ref["tr.audio_text"]), None)
    diff(report, "transformer.video", vx, ref["tr.out_video"])
    diff(report, "transformer.audio", ax, ref["tr.out_audio"])

    enc, dec = VideoEncoderConfigurator.from_metadata(meta), VideoDecoderConfigurator.from_metadata(meta)
    load(enc, sd, VAE_ENCODER_COMFY_KEYS_FILTER, "vae.encoder", report)
    load(dec, sd, VAE_DECODER_COMFY_KEYS_FILTER, "vae.decoder", report)
    video_vae(enc, dec, ref, report)

    aenc, adec = AudioEncoderConfigurator.from_metadata(meta), AudioDecoderConfigurator.from_metadata(meta)
    load(aenc, sd, AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER, "audio_vae.encoder", report)
    load(adec, sd, AUDIO_VAE_DECODER_COMFY_KEYS_FILTER, "audio_vae.decoder", report)
    audio_vae(aenc, adec, ref, report)

    voc = VocoderConfigurator.from_metadata(meta)
    voc.conv_pre = torch.nn.Conv1d(16, 32, 7, padding=3)      # ltx-core hard-codes 128 = 2 x 64 mel bins
    report["notes"].append("vocoder.conv_pre rebuilt with 16 = 2 x 8 mel inputs (ltx-core hard-codes 128)")
    load(voc, sd, VOCODER_COMFY_KEYS_FILTER, "vocoder", report)
    diff(report, "vocoder", voc(ref["avae.mel"]), ref["voc.wave"])

    gemma = Gemma3TextConfig(hidden_size=16, num_hidden_layers=2)
    def connector():       # as Embeddings1DConnectorConfigurator builds it, with 4 registers instead of its fixed 128
        from ltx_core.model.transformer.rope import LTXRopeType
        return Embeddings1DConnector(num_attention_heads=2, attention_head_dim=8, num_layers=1,
                                     positional_embedding_max_pos=[32], rope_type=LTXRopeType.SPLIT,
                                     double_precision_rope=True, num_learnable_registers=4)
    report["notes"].append("connectors built with 4 learnable registers (ltx-core's configurator fixes 128)")
    proc = EmbeddingsProcessor(feature_extractor=_create_feature_extractor(TRANSFORMER, gemma),
                               video_connector=connector(), audio_connector=connector())
    load(proc, sd, EMBEDDINGS_PROCESSOR_KEY_OPS, "connectors", report)
    states = tuple(ref["con.embeds"].view(1, 8, 16, 3).unbind(-1))   # diffusers stacks the layers last
    out = proc.process_hidden_states(states, ref["con.mask"], padding_side="left")
    diff(report, "connectors.video", out.video_encoding, ref["con.video"])
    diff(report, "connectors.audio", out.audio_encoding, ref["con.audio"])

    import gzip
    layout = full_size_layout()
    with gzip.open(DATA / "ltx2_19b_layout.json.gz", "wt") as fh:
        json.dump(layout, fh, sort_keys=True)
    report["full_size_tensors"] = len(layout)
    report["ltx_core_commit"] = a.commit or subprocess.run(
        ["git", "-C", str(a.ltx_core), "log", "-1", "--format=%H %cs"], capture_output=True, text=True).stdout.strip()
    (DATA / "ltx_core_check.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    producer = DATA / "PRODUCER.md"
    head = producer.read_text().split(SECTION)[0].rstrip("\n")
    worst = max(report["max_abs_diff"].values())
    producer.write_text(
        f"{head}\n\n{SECTION}\n\ntools/check_ltx2_with_ltx_core.py, with Lightricks/LTX-2 (ltx-core) commit "
        f"{report['ltx_core_commit']}: ltx-core's own LTX-2 classes (transformer, video VAE encoder and decoder, "
        f"audio VAE encoder and decoder, vocoder, text connectors with their feature extractor) took every tensor of "
        f"ltx2_tiny.safetensors through ltx-core's own checkpoint key maps, strictly, and reproduced every reference "
        f"output within {worst:.1e} (ltx_core_check.json; tiny-size adaptations listed there). "
        f"ltx2_19b_layout.json.gz: the {len(layout)} keys and shapes of an LTX-2 19B checkpoint as ltx-core's classes "
        f"define them at LTX-2's sizes (meta device, no weights), which tests/models/test_files_ltx2.py maps onto "
        f"configs/ltx2_19b.json.\n")
    print(json.dumps(report["max_abs_diff"], indent=1))


SECTION = "## Checked with Lightricks' ltx-core"


# LTX-2 19B at its published sizes (ltx-core's defaults; the VAE's block lists as LTX-2's 4 levels + mid; the audio
# VAE without attention, as diffusers' LTX-2 config)
VAE_19B = {"latent_channels": 128, "patch_size": 4, "dims": 3, "norm_layer": "pixel_norm", "latent_log_var": "uniform",
           "encoder_spatial_padding_mode": "zeros", "causal_decoder": False, "timestep_conditioning": False,
           "decoder_base_channels": 128,
           "encoder_blocks": [["res_x", {"num_layers": 4}], ["compress_space_res", {"multiplier": 2}],
                              ["res_x", {"num_layers": 6}], ["compress_time_res", {"multiplier": 2}],
                              ["res_x", {"num_layers": 6}], ["compress_all_res", {"multiplier": 2}],
                              ["res_x", {"num_layers": 2}], ["compress_all_res", {"multiplier": 2}],
                              ["res_x", {"num_layers": 2}]],
           "decoder_blocks": [["res_x", {"num_layers": 5}], ["compress_all", {"residual": True, "multiplier": 2}],
                              ["res_x", {"num_layers": 5}], ["compress_all", {"residual": True, "multiplier": 2}],
                              ["res_x", {"num_layers": 5}], ["compress_all", {"residual": True, "multiplier": 2}],
                              ["res_x", {"num_layers": 5}]]}


def full_size_layout() -> dict[str, list[int]]:
    """{checkpoint key: shape} of an LTX-2 19B all-in-one checkpoint as ltx-core's classes define it (built on the
    meta device: no weights), under the prefixes ltx-core's key maps strip."""
    from ltx_core.model.audio_vae.model_configurator import (AudioDecoderConfigurator, AudioEncoderConfigurator,
                                                             VocoderConfigurator)
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator
    from ltx_core.model.video_vae.model_configurator import VideoDecoderConfigurator, VideoEncoderConfigurator
    from ltx_core.text_encoders.gemma.embeddings_connector import Embeddings1DConnector
    from ltx_core.text_encoders.gemma.encoders.encoder_configurator import _create_feature_extractor
    from transformers import Gemma3TextConfig
    fixed = dict(LTX_FIXED, caption_channels=3840, num_attention_heads=32, attention_head_dim=128,
                 audio_num_attention_heads=32, audio_attention_head_dim=64)     # the rest: ltx-core's defaults
    audio = {"model": {"params": {"ddconfig": {"attn_resolutions": [], "mid_block_add_attention": False,
                                               "mel_bins": 64}}}}
    with torch.device("meta"):
        parts = {"model.diffusion_model.": LTXModelConfigurator.from_metadata({"config": {"transformer": fixed}}),
                 "model.diffusion_model.video_embeddings_connector.": Embeddings1DConnector(),
                 "model.diffusion_model.audio_embeddings_connector.": Embeddings1DConnector(),
                 "text_embedding_projection.": _create_feature_extractor({}, Gemma3TextConfig(hidden_size=3840,
                                                                                              num_hidden_layers=48)),
                 "vae.encoder.": VideoEncoderConfigurator.from_metadata({"config": {"vae": VAE_19B}}),
                 "vae.decoder.": VideoDecoderConfigurator.from_metadata({"config": {"vae": VAE_19B}}),
                 "audio_vae.encoder.": AudioEncoderConfigurator.from_metadata({"config": {"audio_vae": audio}}),
                 "audio_vae.decoder.": AudioDecoderConfigurator.from_metadata({"config": {"audio_vae": audio}}),
                 "vocoder.": VocoderConfigurator.from_metadata({"config": {"vocoder": {"resblock": "1",
                                                                                        "stereo": True}}})}
    out = {}
    for prefix, module in parts.items():
        for k, v in module.state_dict().items():
            at = prefix.split(".")[0] + "." if k.startswith("per_channel_statistics.") else prefix   # one per VAE
            out[at + k] = list(v.shape)
    return out


def video_vae(enc, dec, ref, report) -> None:
    """ltx-core's encoder gives normalised means; diffusers' encode gives raw ones (the pipelines normalise)."""
    stats = enc.per_channel_statistics
    latent = enc(ref["vae.x"])
    raw = stats.un_normalize(latent) if hasattr(stats, "un_normalize") else latent
    diff(report, "vae.encode", raw, ref["vae.latent"])
    z = stats.normalize(ref["vae.z"]) if hasattr(stats, "normalize") else ref["vae.z"]
    diff(report, "vae.decode", dec(z), ref["vae.decoded"])


def audio_vae(aenc, adec, ref, report) -> None:
    """ltx-core's audio decoder de-normalises its input and its encoder normalises its output, in the patched
    (B, L, C*M) layout; diffusers' decode/encode work on raw latents (the pipelines (de)normalise)."""
    def stats(module, z, forward: bool):
        from ltx_core.model.audio_vae.audio_vae import AudioLatentShape
        shape = AudioLatentShape(batch=z.shape[0], channels=z.shape[1], frames=z.shape[2], mel_bins=z.shape[3])
        st = module.per_channel_statistics
        patched = module.patchifier.patchify(z)
        patched = st.normalize(patched) if forward else st.un_normalize(patched)
        return module.patchifier.unpatchify(patched, shape)

    diff(report, "audio_vae.decode", adec(stats(adec, ref["avae.z"], True)), ref["avae.mel"])
    diff(report, "audio_vae.encode", stats(aenc, aenc(ref["avae.mel"]), False), ref["avae.latent"])


if __name__ == "__main__":
    main()
