"""LTX-2 as a video family (families/ltx2_video.py): picture and sound in one pass of Kinema's loop, on the tiny
random fixture-ltx2 (models/fixtures.build_ltx2).

- Text-to-video == diffusers' LTX2Pipeline, same seed and sigmas, video latents, frames, audio latents and waveform
  within 1e-5 (the pipeline's extra guidances off: STG 0, modality 1, rescale 0; one guidance scale for both). The
  pipeline is given our audio length (it covers frames / fps) as all-zero `audio_latents` with noise_scale 1, so it
  starts from fresh noise drawn in the packed layout, as ours.
- Image-to-video == LTX2ImageToVideoPipeline (the first latent frame held clean).
- The sound: exactly frames / fps, muxed sample-exact by Decode And Save Video.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from kinema.models.families import load_model
from kinema.models.joint import sample_clip
from kinema.models.sampling import SamplerSettings

PIPE_PARTS = ("scheduler", "vae", "audio_vae", "text_encoder", "tokenizer", "connectors", "transformer", "vocoder")
OFF = dict(stg_scale=0.0, audio_stg_scale=0.0, modality_scale=1.0, audio_modality_scale=1.0, guidance_rescale=0.0,
           audio_guidance_rescale=0.0, spatio_temporal_guidance_blocks=None)


@pytest.fixture(scope="module")
def model(models_dir, one_thread):
    return load_model(models_dir / "diffusers" / "fixture-ltx2")


def _pipe(model, cls):
    pipe = cls(**{k: getattr(model.pipe, k) for k in PIPE_PARTS})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(seed=0, size=(32, 64)):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, 3, 3, generator=g)
    return torch.nn.functional.interpolate(low, size=size, mode="bilinear").permute(0, 2, 3, 1)   # (1, H, W, 3)


def _compare(model, clip, settings, pipe, kwargs):
    layout = model.layout(settings)
    p, vae, avae = model.pipe, model.vae, model.audio_vae
    audio_in = torch.zeros(1, avae.config.latent_channels, layout.audio_steps, model.latent_mel_bins)
    kwargs = dict(kwargs, height=settings.height, width=settings.width, num_frames=settings.num_frames,
                  frame_rate=float(model.fps(settings)), num_inference_steps=settings.num_inference_steps,
                  guidance_scale=settings.guidance_scale, audio_guidance_scale=settings.guidance_scale,
                  noise_scale=1.0, audio_latents=audio_in, return_dict=False, **OFF)
    seed = settings.seed
    video_l, audio_l = pipe(**kwargs, generator=torch.Generator().manual_seed(seed), output_type="latent")
    frames, wave = pipe(**kwargs, generator=torch.Generator().manual_seed(seed), output_type="np")
    ours_v = p._denormalize_latents(clip.video, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    ours_a = p._unpack_audio_latents(p._denormalize_audio_latents(clip.audio_latents, avae.latents_mean,
                                                                  avae.latents_std), layout.audio_steps,
                                     model.latent_mel_bins)
    assert ours_v.shape == video_l.shape and ours_a.shape == audio_l.shape
    assert (ours_v - video_l).abs().max() < 1e-5 and (ours_a - audio_l).abs().max() < 1e-5
    ours_frames = model.decode(clip.video).numpy()                                    # (F, H, W, 3)
    assert ours_frames.shape == frames[0].shape and np.abs(ours_frames - frames[0]).max() < 1e-5
    assert (model.decode_audio_latents(clip.audio_latents) - wave).abs().max() < 1e-5


@pytest.mark.parametrize("cfg,negative", [(1.0, None), (3.0, "noise")])
def test_text_to_video_equals_ltx2_pipeline(model, cfg, negative):
    from diffusers import LTX2Pipeline
    settings = SamplerSettings(num_frames=9, height=32, width=64, num_inference_steps=3, guidance_scale=cfg, seed=7,
                               frame_rate=Fraction(25))
    neg = model.encode_prompt(negative or "")
    clip = sample_clip(model, model.encode_prompt("a drum"), neg, settings)
    assert clip.video.shape == (1, 4, 5, 16, 32) and clip.audio_latents.shape == (1, 10, 4)
    _compare(model, clip, settings, _pipe(model, LTX2Pipeline),
             dict(prompt="a drum", negative_prompt=negative or ""))


def test_image_to_video_equals_ltx2_image_to_video_pipeline(model):
    from diffusers import LTX2ImageToVideoPipeline
    image = _image()
    settings = SamplerSettings(num_frames=9, height=32, width=64, num_inference_steps=3, guidance_scale=3.0, seed=5,
                               frame_rate=Fraction(24))
    positive = model.encode_prompt("a ball").with_image(image)
    clip = sample_clip(model, positive, model.encode_prompt("blur"), settings)
    from kinema.models.families.wan import image_to_pil
    _compare(model, clip, settings, _pipe(model, LTX2ImageToVideoPipeline),
             dict(image=image_to_pil(image), prompt="a ball", negative_prompt="blur"))


@pytest.mark.parametrize("frames,fps", [(9, Fraction(24)), (17, Fraction(2997, 100)), (1, Fraction(25))])
def test_sound_lasts_frames_over_fps(model, frames, fps):
    from kinema.models import media
    from kinema.models.joint import decode_sound
    settings = SamplerSettings(num_frames=frames, height=32, width=32, num_inference_steps=1, guidance_scale=1.0,
                               frame_rate=fps)
    clip = sample_clip(model, model.encode_prompt("rain"), None, settings)
    audio = decode_sound(model, {"kinema_audio": clip.audio_latents, "kinema_frames": frames, "kinema_fps": fps})
    assert audio["sample_rate"] == 16000
    assert audio["waveform"].shape == (1, 2, media.samples_for_frames(frames, fps, 16000))
    assert audio["waveform"].abs().max() > 0


def test_sound_depends_on_the_prompt_and_seed(model):
    settings = SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=2, guidance_scale=1.0, seed=1)
    run = lambda text, seed=1: sample_clip(model, model.encode_prompt(text), None,
                                           SamplerSettings(**{**settings.__dict__, "seed": seed}))
    a = run("rain")
    assert torch.equal(a.audio_latents, run("rain").audio_latents) and torch.equal(a.video, run("rain").video)
    assert not torch.equal(a.audio_latents, run("a dog barking").audio_latents)
    assert not torch.equal(a.audio_latents, run("rain", seed=2).audio_latents)


def test_the_sampler_node_carries_the_sound_to_a_muxed_mp4(model, kinema_dirs):
    import av
    from kinema.models.media import read_video_info
    from kinema.nodes.decode import KinemaDecodeAndSave, KinemaDecodeVideoSound
    from kinema.nodes.sampling import KinemaTemporalSampler
    pos, neg = model.encode_prompt("waves"), model.encode_prompt("")
    (latent,) = KinemaTemporalSampler().sample(model, pos, neg, 17, 32, 32, 2, 1.0, 3, "default", 0.0, 1.0,
                                               fps=25.0)
    assert latent["samples"].shape == (1, 4, 9, 16, 16) and latent["kinema_fps"] == 25
    (audio,) = KinemaDecodeVideoSound().decode(model, latent)
    assert audio["waveform"].shape == (1, 2, 17 * 16000 // 25)                        # 0.68 s, sample-exact
    KinemaDecodeAndSave().save(model, latent, 25.0, "mp4", "ltx2", audio=audio)
    (file,) = kinema_dirs["output"].glob("ltx2*.mp4")
    info = read_video_info(file)
    assert info.frames == 17 and abs(info.audio.duration - 17 / 25) < 1 / 25
    with av.open(str(file)) as c:
        assert c.streams.audio[0].codec_context.sample_rate in (16000, 48000, 44100)


def test_errors_name_the_input_and_the_fix(model, models_dir):
    from kinema.models.joint import decode_sound
    with pytest.raises(ValueError, match="`latent` carries no sound"):
        decode_sound(model, {"samples": torch.zeros(1, 4, 5, 16, 16), "kinema_frames": 9})
    wan = load_model(models_dir / "diffusers" / "fixture-wan-t2v")
    with pytest.raises(ValueError, match="`model` makes no sound"):
        decode_sound(wan, {"kinema_audio": torch.zeros(1, 10, 4), "kinema_frames": 9, "kinema_fps": 24})
    with pytest.raises(ValueError, match="`height`"):
        sample_clip(model, model.encode_prompt("x"), None, SamplerSettings(num_frames=9, height=48, width=32))


@pytest.mark.parametrize("steps", [8, 3])
def test_distilled_schedule_equals_the_pipeline_with_distilled_sigmas(model, steps):
    """A distilled folder samples with diffusers' DISTILLED_SIGMA_VALUES (8 steps; 3 = the stage-2 tail)."""
    import copy
    from diffusers import LTX2Pipeline
    from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES, STAGE_2_DISTILLED_SIGMA_VALUES
    distilled = copy.copy(model)
    distilled.distilled = True
    settings = SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=steps, guidance_scale=1.0,
                               seed=3, frame_rate=Fraction(24))
    clip = sample_clip(distilled, distilled.encode_prompt("a fox"), None, settings)
    sigmas = DISTILLED_SIGMA_VALUES if steps == 8 else STAGE_2_DISTILLED_SIGMA_VALUES
    _compare(distilled, clip, settings, _pipe(model, LTX2Pipeline), dict(prompt="a fox", sigmas=sigmas))
    plain = sample_clip(model, model.encode_prompt("a fox"), None, settings)
    assert not torch.allclose(plain.video, clip.video)                          # another schedule, other latents
    with pytest.raises(ValueError, match="`steps` must be 1..8"):
        sample_clip(distilled, distilled.encode_prompt("a fox"), None,
                    SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=20))


def test_a_folder_named_distilled_loads_with_the_distilled_schedule(models_dir, tmp_path):
    link = tmp_path / "LTX-2.3-Distilled-Diffusers"
    link.symlink_to(models_dir / "diffusers" / "fixture-ltx2", target_is_directory=True)
    assert load_model(link).distilled and not load_model(models_dir / "diffusers" / "fixture-ltx2").distilled


@pytest.mark.parametrize("first", [False, True])
def test_keyframes_equal_ltx2_condition_pipeline(model, first):
    """Keyframe images at latent frames 2 and 4 (pixel frames 3 and 7 of 9): LTX2ConditionPipeline's keyframe
    conditions at strength 1 (appended tokens at their own times); with `first`, a condition at index 0 too (the
    start image, held clean in place)."""
    from diffusers import LTX2ConditionPipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition
    from kinema.models.families.ltx2_portrait import portrait_array
    a, b, start = _image(1), _image(2), _image(3)
    settings = SamplerSettings(num_frames=9, height=32, width=64, num_inference_steps=3, guidance_scale=3.0, seed=4,
                               frame_rate=Fraction(24))
    positive = model.encode_prompt("a ball").replace(key_images=((3, a), (7, b)))
    conditions = [LTX2VideoCondition(frames=portrait_array(a), index=2, strength=1.0),
                  LTX2VideoCondition(frames=portrait_array(b), index=4, strength=1.0)]
    if first:
        positive = positive.with_image(start)
        conditions.insert(0, LTX2VideoCondition(frames=portrait_array(start), index=0, strength=1.0))
    clip = sample_clip(model, positive, model.encode_prompt("blur"), settings)
    assert clip.video.shape == (1, 4, 5, 16, 32)
    _compare(model, clip, settings, _pipe(model, LTX2ConditionPipeline),
             dict(conditions=conditions, prompt="a ball", negative_prompt="blur"))
    plain = sample_clip(model, model.encode_prompt("a ball"), model.encode_prompt("blur"), settings)
    assert not torch.allclose(plain.video, clip.video, atol=1e-3)                   # the keyframes act


def test_keyframe_frames_are_checked(model):
    settings = SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=1, guidance_scale=1.0)
    for frame in (4, 9, 0):
        positive = model.encode_prompt("x").replace(key_images=((frame, _image(size=(32, 32))),))
        with pytest.raises(ValueError, match="`frame` must be 2k\\+1"):
            sample_clip(model, positive, None, settings)


def test_keyframe_image_node_chains_and_other_families_refuse_keyframes(model, models_dir):
    from kinema.nodes.conditioning import KinemaKeyframeImage
    image = _image(size=(32, 32))
    (one,) = KinemaKeyframeImage().attach(model.encode_prompt("x"), image, 3)
    (two,) = KinemaKeyframeImage().attach(one, torch.cat([image, image]), 7)
    assert [f for f, _ in two.key_images] == [3, 7] and two.key_images[1][1].shape == (1, 32, 32, 3)
    settings = SamplerSettings(num_frames=9, height=32, width=32, num_inference_steps=1, guidance_scale=1.0)
    assert sample_clip(model, two, None, settings).video.shape == (1, 4, 5, 16, 16)
    wan = load_model(models_dir / "diffusers" / "fixture-wan-t2v")
    with pytest.raises(ValueError, match="`positive` carries keyframe images"):
        sample_clip(wan, wan.encode_prompt("x").replace(key_images=two.key_images), None,
                    SamplerSettings(num_frames=5, height=32, width=32, num_inference_steps=1))


def test_gemma_leaves_the_gpu_after_each_prompt(model, monkeypatch):
    """On a GPU the text encoder is on the device only while a prompt is encoded (moves recorded; the encoding
    itself runs on the CPU here: no GPU in CI)."""
    from kinema.models.families import ltx2_common
    moves = []
    encoder = model.pipe.text_encoder
    monkeypatch.setattr(encoder, "to", lambda *a, **k: moves.append(str(a[0])) or encoder)
    calls = []
    monkeypatch.setattr(model.pipe, "_get_gemma_prompt_embeds",
                        lambda text, max_sequence_length, device: calls.append((text, str(device), list(moves)))
                        or (torch.zeros(1, 2, 3), torch.ones(1, 2)))
    ltx2_common.gemma_prompt(model.pipe, "a drum", "cuda:0")
    assert calls == [("a drum", "cuda:0", ["cuda:0"])] and moves == ["cuda:0", "cpu"]
    moves.clear()
    ltx2_common.gemma_prompt(model.pipe, "a drum", "cpu")
    assert moves == []
