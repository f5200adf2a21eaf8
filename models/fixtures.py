"""Tiny random-weight models of every supported family, in their real on-disk layout.

`kinema fixtures DIR` and the tests use these: real diffusers classes with tiny configs, tokenizers built in
code (no hub), saved with save_pretrained and loaded back through Kinema's own loaders. The weights are random:
the videos they make are noise, but every code path (loading, sampling, decoding, saving) is the real one.
"""
from __future__ import annotations

import functools
import string
from pathlib import Path

import torch

FIXTURES = ("fixture-wan-t2v", "fixture-wan-i2v", "fixture-wan-vace", "fixture-animatediff", "fixture-stable-audio",
            "fixture-ltx2", "fixture-ltx2-upsampler")
_CHARS = string.ascii_letters + string.digits + string.punctuation


def _private_rng(build):
    """A builder run with the CPU random generator saved before and restored after: its weights come from seed 0
    whatever the caller's RNG state, and the caller's RNG is left exactly as it was (e.g. in `kinema fixtures`)."""
    @functools.wraps(build)
    def run(*args, **kwargs):
        with torch.random.fork_rng(devices=[]):
            return build(*args, **kwargs)
    return run


def _seed() -> None:
    """Seed 0 for the next module's initial weights, on the CPU generator only (torch.manual_seed would also reseed
    every GPU's generator, which fork_rng(devices=[]) does not restore). Call only inside a _private_rng builder."""
    torch.random.default_generator.manual_seed(0)


def _t5_pieces() -> list[tuple[str, float]]:
    """The fixture T5 vocabulary: (piece, score), <pad> 0, </s> 1, <unk> 2."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    return pieces + [(c, -3.0) for c in _CHARS] + [("▁" + c, -2.5) for c in string.ascii_letters]


def t5_tokenizer(model_max_length: int = 512):
    """A SentencePiece-Unigram T5 tokenizer made in code: specials, '▁', single characters, '▁x' pieces."""
    from transformers import T5Tokenizer
    return T5Tokenizer(vocab=_t5_pieces(), extra_ids=0, model_max_length=model_max_length)


def clip_tokenizer(model_max_length: int = 77):
    """A byte-level BPE CLIP tokenizer with no merges (every byte and its end-of-word form)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in sorted(ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def gemma_tokenizer(model_max_length: int = 1024):
    """A Gemma tokenizer made in code: specials, byte fallback, '▁' and single characters (no merges)."""
    from transformers import GemmaTokenizer
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for i in range(256):
        vocab[f"<0x{i:02X}>"] = len(vocab)
    for c in "▁" + _CHARS:
        vocab.setdefault(c, len(vocab))
    return GemmaTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def _umt5(tok):
    from transformers import UMT5Config, UMT5EncoderModel
    _seed()
    cfg = UMT5Config(vocab_size=len(tok), d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                     relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return UMT5EncoderModel(cfg).eval()


def _wan_parts(in_channels: int, image_dim: int | None = None) -> dict:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    _seed()
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    tok = t5_tokenizer()
    te = _umt5(tok)
    _seed()
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=in_channels, out_channels=16, text_dim=32, freq_dim=256,
                                        ffn_dim=32, num_layers=2, cross_attn_norm=True,
                                        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, image_dim=image_dim)
    return dict(vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), tokenizer=tok, text_encoder=te,
                transformer=transformer)


@_private_rng
def build_wan_t2v():
    from diffusers import WanPipeline
    return WanPipeline(**_wan_parts(16), transformer_2=None)


@_private_rng
def build_wan_i2v():
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection
    parts = _wan_parts(16 + 4 + 16, image_dim=4)                    # latents + mask channels + image latents
    _seed()
    enc = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        intermediate_size=16, patch_size=1)).eval()
    return WanImageToVideoPipeline(**parts, image_encoder=enc, image_processor=CLIPImageProcessor(crop_size=32, size=32),
                                   transformer_2=None)


@_private_rng
def build_wan_vace():
    """Wan VACE (WanVACEPipeline): the Wan text-to-video parts with a VACE transformer, control blocks on both
    layers (96 control channels: inactive + reactive latents 2 x 16, plus an 8 x 8 pixel mask per latent cell)."""
    from diffusers import WanVACEPipeline, WanVACETransformer3DModel
    parts = _wan_parts(16)
    _seed()
    parts["transformer"] = WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, vace_layers=[0, 1], vace_in_channels=96)
    return WanVACEPipeline(**parts, transformer_2=None)


@_private_rng
def build_animatediff():
    from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    cad, boc = 8, (8, 8)
    _seed()
    unet = UNet2DConditionModel(block_out_channels=boc, layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cad,
                                norm_num_groups=2)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="linear", clip_sample=False)
    _seed()
    vae = AutoencoderKL(block_out_channels=boc, in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, norm_num_groups=2)
    tok = clip_tokenizer()
    _seed()
    te = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=len(tok),
                                      hidden_size=cad, intermediate_size=37, num_attention_heads=2,
                                      num_hidden_layers=2, max_position_embeddings=77, projection_dim=cad)).eval()
    _seed()
    adapter = MotionAdapter(block_out_channels=boc, motion_layers_per_block=1, motion_norm_num_groups=2,
                            motion_num_attention_heads=4)
    return AnimateDiffPipeline(unet=unet, scheduler=scheduler, vae=vae, motion_adapter=adapter, text_encoder=te,
                               tokenizer=tok, feature_extractor=None, image_encoder=None)


@_private_rng
def build_stable_audio():
    """Stable Audio Open in miniature: 8 kHz stereo, hop 8, a 1024-step latent window (1.024 s)."""
    from diffusers import (AutoencoderOobleck, EDMDPMSolverMultistepScheduler, StableAudioDiTModel,
                           StableAudioPipeline, StableAudioProjectionModel)
    from transformers import T5Config, T5EncoderModel
    _seed()
    transformer = StableAudioDiTModel(sample_size=1024, in_channels=3, num_layers=2, attention_head_dim=4,
                                      num_attention_heads=4, num_key_value_attention_heads=2, out_channels=3,
                                      cross_attention_dim=4, time_proj_dim=8, global_states_input_dim=8,
                                      cross_attention_input_dim=4)
    # the scheduler StableAudioPipeline declares (its diffusers test scheduler needs torchsde)
    scheduler = EDMDPMSolverMultistepScheduler(solver_order=2, prediction_type="v_prediction", sigma_data=1.0,
                                               sigma_schedule="exponential")
    _seed()
    vae = AutoencoderOobleck(encoder_hidden_size=6, downsampling_ratios=[2, 4], decoder_channels=3,
                             decoder_input_channels=3, audio_channels=2, channel_multiples=[2, 4], sampling_rate=8000)
    tok = t5_tokenizer(model_max_length=32)
    _seed()
    te = T5EncoderModel(T5Config(vocab_size=len(tok), d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                                 relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                 decoder_start_token_id=0)).eval()
    _seed()
    proj = StableAudioProjectionModel(text_encoder_dim=32, conditioning_dim=4, min_value=0, max_value=32)
    return StableAudioPipeline(transformer=transformer, scheduler=scheduler, vae=vae, text_encoder=te,
                               tokenizer=tok, projection_model=proj)


def _gemma3(tok):
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration
    _seed()
    cfg = Gemma3Config(
        text_config=dict(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=1024,
                         sliding_window=64, layer_types=["sliding_attention", "full_attention"],
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        mm_tokens_per_image=4, boi_token_index=len(tok) - 3, eoi_token_index=len(tok) - 2,
        image_token_index=len(tok) - 1)
    return Gemma3ForConditionalGeneration(cfg).eval()


def _ltx2_video_vae():
    """fixture-ltx2's video VAE (seeded: the upsampler fixture holds the same weights)."""
    from diffusers import AutoencoderKLLTX2Video
    _seed()
    return AutoencoderKLLTX2Video(   # spatiotemporal downsampling: multi-frame conditions need a time axis
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False),
        downsample_type=("spatiotemporal",), upsample_residual=(False,), upsample_factor=(1,),
        timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True, decoder_causal=False)


@_private_rng
def build_ltx2_upsampler(temporal: bool = False):
    """LTX-2's latent upsampler in miniature (LTX2LatentUpsamplePipeline: fixture-ltx2's VAE + a 2x spatial, or with
    temporal also 2x in time, LTX2LatentUpsamplerModel of 32 channels)."""
    from diffusers import LTX2LatentUpsamplePipeline
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    vae = _ltx2_video_vae()
    _seed()
    upsampler = LTX2LatentUpsamplerModel(in_channels=4, mid_channels=32, num_blocks_per_stage=1, dims=3,
                                         spatial_upsample=True, temporal_upsample=temporal)
    return LTX2LatentUpsamplePipeline(vae=vae, latent_upsampler=upsampler)


@_private_rng
def build_ltx2():
    """LTX-2 (joint video + audio) in miniature: video VAE 2x in space and time, 16 kHz stereo audio through a
    mel VAE (8 bins) and a vocoder whose upsampling (10 x 16) equals the mel hop (160)."""
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2Pipeline, LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
    tok = gemma_tokenizer()
    te = _gemma3(tok)
    hidden, layers = te.config.text_config.hidden_size, te.config.text_config.num_hidden_layers
    _seed()
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads",
        caption_channels=hidden, rope_double_precision=False, rope_type="split")
    _seed()
    connectors = LTX2TextConnectors(   # heads x head dim must equal the text encoder's hidden size
        caption_channels=hidden, text_proj_in_factor=layers + 1, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_theta=10000.0,
        rope_double_precision=False, causal_temporal_positioning=False, rope_type="split")
    vae = _ltx2_video_vae()
    _seed()
    audio_vae = AutoencoderKLLTX2Audio(
        # 4x in time and mel as LTX-2's (the pipelines assume it), 2 causal res blocks a level: speech encodes to
        # the transformer's audio width (the audio-driven portrait encodes it)
        base_channels=4, output_channels=2, ch_mult=(1, 2, 4), num_res_blocks=2, attn_resolutions=None,
        in_channels=2, resolution=32, latent_channels=2, norm_type="pixel", causality_axis="height", dropout=0.0,
        mid_block_add_attention=False, sample_rate=16000, mel_hop_length=160, is_causal=True, mel_bins=8)
    _seed()
    vocoder = LTX2Vocoder(in_channels=2 * 8, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[20, 32],
                          upsample_factors=[10, 16], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
                          leaky_relu_negative_slope=0.1, output_sampling_rate=16000)
    return LTX2Pipeline(transformer=transformer, vae=vae, audio_vae=audio_vae,
                        scheduler=FlowMatchEulerDiscreteScheduler(), text_encoder=te, tokenizer=tok,
                        connectors=connectors, vocoder=vocoder, processor=None, prompt_enhancer=None,
                        duration_head=None)


def build_wan_lightx2v_lora(transformer, rank: int = 4) -> dict[str, torch.Tensor]:
    """A LoRA for `transformer` (a WanTransformer3DModel, weights not read) in the layout of lightx2v's few-step
    distillation LoRAs for ComfyUI: original Wan names under `diffusion_model.`, lora_down/lora_up/alpha on every
    linear layer, `diff_b` on their biases, full-rank `diff` on norm weights and the patch embedding, `diff_m` on
    the modulation tables. Seeded random values (no distillation: it tests the format, not few-step quality)."""
    from .lora_keys import wan_original
    g = torch.Generator().manual_seed(0)

    def randn(*shape, std=1.0):
        return torch.randn(*shape, generator=g) * std

    out = {}
    for name, p in transformer.named_parameters():
        orig = wan_original(name)
        mod, _, leaf = orig.rpartition(".")
        key = f"diffusion_model.{mod}"
        if leaf == "modulation":                       # blocks.N.modulation / head.modulation -> `<parent>.diff_m`
            out[f"{key}.diff_m"] = randn(*p.shape, std=0.02)
        elif p.ndim == 2 and leaf == "weight":
            out[f"{key}.lora_down.weight"] = randn(rank, p.shape[1], std=p.shape[1] ** -0.5)
            out[f"{key}.lora_up.weight"] = randn(p.shape[0], rank, std=0.05)
            out[f"{key}.alpha"] = torch.tensor(float(rank))
        else:                                          # biases, norm weights, the patch embedding's Conv3d
            out[f"{key}.{'diff_b' if leaf == 'bias' else 'diff'}"] = randn(*p.shape, std=0.02)
    return out


@_private_rng
def write_lora_fixtures(models_dir: Path, overwrite: bool = False) -> list[Path]:
    """`<models_dir>/loras/fixture-wan-lightx2v.safetensors`, a lightx2v-layout LoRA for fixture-wan-t2v (whose
    saved config it reads), written beside and renamed into place."""
    import os
    import tempfile
    from .meta import init_empty_weights
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file
    config = Path(models_dir) / "diffusers" / "fixture-wan-t2v" / "transformer"
    final = Path(models_dir) / "loras" / "fixture-wan-lightx2v.safetensors"
    if not (config / "config.json").is_file() or (final.is_file() and not overwrite):
        return [final] if final.is_file() else []
    with init_empty_weights():
        transformer = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(str(config)))
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
    os.close(fd)
    try:
        save_file(build_wan_lightx2v_lora(transformer), tmp, metadata={"kinema": "fixture: random weights"})
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return [final]


# ---- the same tiny models as ComfyUI users have them: one file per part, ComfyUI's folders and key layouts ----
COMFY_FILES = {"diffusion_models/fixture_wan_t2v.safetensors": "fixture-wan-t2v",
               "diffusion_models/fixture_wan_vace.safetensors": "fixture-wan-vace",
               "text_encoders/fixture_umt5.safetensors": "text_encoder",
               "vae/fixture_wan_2.1_vae.safetensors": "vae"}


def comfy_files() -> dict[str, dict]:
    """{relative path: state dict} of the Wan fixtures in ComfyUI's layouts: the denoisers with the original Wan
    keys, the UMT5 encoder with its tokenizer as a `spiece_model` tensor, the VAE in wan_2.1_vae's keys. Written
    from the fixtures' own diffusers modules through the inverse of Kinema's mapping (a workflow input, not a proof:
    the proof that Kinema reads ComfyUI's files is tests/data/comfy, written by ComfyUI's own classes)."""
    from .files.text import spiece_from_vocab
    from .files.wan import diffusers_to_original, vae_to_original
    t2v, vace = build_wan_t2v(), build_wan_vace()
    out = {}
    for path, pipe in (("diffusion_models/fixture_wan_t2v.safetensors", t2v),
                       ("diffusion_models/fixture_wan_vace.safetensors", vace)):
        out[path] = {diffusers_to_original(k): v for k, v in pipe.transformer.state_dict().items()}
    te = {k: v for k, v in t2v.text_encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    te["spiece_model"] = torch.frombuffer(bytearray(spiece_from_vocab(_t5_pieces(), 2, 1, 0)), dtype=torch.uint8)
    out["text_encoders/fixture_umt5.safetensors"] = te
    nrb = t2v.vae.config.num_res_blocks
    out["vae/fixture_wan_2.1_vae.safetensors"] = {vae_to_original(k, nrb): v for k, v in t2v.vae.state_dict().items()}
    return out


def write_comfy_files(models_dir: Path, overwrite: bool = False) -> list[Path]:
    """Write comfy_files() under models_dir (each file atomically, marked as a Kinema fixture in its metadata, which
    lets Load Video Model (Files) load its unpublished tiny shapes). Returns the paths."""
    import json
    import os
    from safetensors.torch import save_file
    from .files.family import FIXTURE_MARK
    paths = [Path(models_dir) / rel for rel in COMFY_FILES]
    if all(p.is_file() for p in paths) and not overwrite:
        return paths
    # what no shape tells: the fixtures' 12-wide heads (published Wan heads are 128 wide, the detection's rule)
    info = json.dumps({"note": "random weights made by `kinema fixtures`, for testing only", "num_attention_heads": 2})
    for path, (rel, sd) in zip(paths, comfy_files().items()):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp), metadata={FIXTURE_MARK: info})
        os.replace(tmp, path)
    return paths


BUILDERS = {"fixture-wan-t2v": build_wan_t2v, "fixture-wan-i2v": build_wan_i2v, "fixture-wan-vace": build_wan_vace,
            "fixture-animatediff": build_animatediff, "fixture-stable-audio": build_stable_audio,
            "fixture-ltx2": build_ltx2, "fixture-ltx2-upsampler": build_ltx2_upsampler}


def write_fixtures(models_dir: Path, names=FIXTURES, overwrite: bool = False) -> list[Path]:
    """Save each fixture pipeline to `<models_dir>/diffusers/<name>/` (with fixture-wan-t2v, also the Wan fixtures as
    ComfyUI's single files (write_comfy_files) and its LoRA in `<models_dir>/loras/`); returns the folders and
    files. Skips existing ones unless overwrite. Each folder is written beside and renamed into place (never
    half-written)."""
    import shutil
    import tempfile
    root = Path(models_dir) / "diffusers"
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        final = root / name
        out.append(final)
        if (final / "model_index.json").is_file() and not overwrite:
            continue
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
        try:
            BUILDERS[name]().save_pretrained(tmp)
            (tmp / "KINEMA_FIXTURE.txt").write_text(
                "Random weights made by `kinema fixtures`: for testing the pipeline, not for real videos.\n")
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    if "fixture-wan-t2v" in names:   # the same Wan models as single files in ComfyUI's folders
        out += write_comfy_files(models_dir, overwrite)
    return out + write_lora_fixtures(models_dir, overwrite)
