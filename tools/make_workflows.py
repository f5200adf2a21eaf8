"""Writes workflows/*.json (UI format, what the editor opens) from the compact API prompts below, and the
sample assets in workflows/assets/. Run it after changing a node's inputs: `python tools/make_workflows.py`.
The tests check that the shipped files equal what this script writes; what each workflow must produce is in
tests/workflows/expect/<name>.json (workflows/ holds only workflows and their assets: ComfyUI serves it as
templates). Each workflow also gets its template thumbnail, workflows/<name>.jpg (tools/make_thumbnails.py: made
when missing, all again with `--thumbnails`)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

WORKFLOWS_DIR = Path(__file__).resolve().parents[1] / "workflows"


def _link(node: int, slot: int = 0) -> list:
    return [str(node), slot]


def _sampler(model=1, pos=2, neg=3, length=17, size=64, steps=8, cfg=5.0, seed=42, denoise=1.0, latent=None):
    inputs = {"model": _link(model), "positive": _link(pos), "negative": _link(neg), "length": length,
              "width": size, "height": size, "steps": steps, "cfg": cfg, "seed": seed, "scheduler": "default",
              "shift": 0.0, "denoise": denoise}
    if latent is not None:
        inputs["latent"] = _link(latent)
    return {"class_type": "KinemaTemporalSampler", "inputs": inputs}


def _text(model, text, title):
    return {"class_type": "KinemaTextEncode", "inputs": {"model": _link(model), "text": text},
            "_meta": {"title": title}}


def _loader(name):
    return {"class_type": "KinemaLoadVideoModel",
            "inputs": {"model": name, "family": "auto", "device": "auto", "dtype": "auto", "weights": "none",
                       "parallel": "none", "gpus": 0}}


def _video_decode(latent=4, model=1) -> dict:
    return {"class_type": "KinemaVideoDecode", "inputs": {"model": _link(model), "latent": _link(latent), "draft": False}}


def _decode_and_save(fps: float, prefix: str, model=1, latent=4) -> dict:
    """Decode And Save Video keeping the latents: a long render is never lost to a failed decode."""
    return {"class_type": "KinemaDecodeAndSave", "inputs": {
        "model": _link(model), "latent": _link(latent), "fps": fps, "format": "mp4", "filename_prefix": prefix,
        "keep_latents": True, "draft": False}}


RESUME = ("Decode And Save Video writes the latents first (prefix_00001_.latents.safetensors beside the video, "
          "kept here by keep_latents): if the decode fails, or to decode again, run `kinema decode "
          "output/Kinema/<file>.latents.safetensors`, or pick the file in Load Latent and connect it here.")
NEG = "blurry, flicker, distorted, low quality"
TINY = "kinema-tiny-video"          # bundled with the pack (models/tiny/weights)
LTX2_NOTE = ("Bundled: `fixture-ltx2`, a tiny RANDOM-WEIGHT LTX-2 from `kinema fixtures` (noise, and noisy sound). For "
             "real clips put Lightricks/LTX-2 (diffusers format) in models/diffusers and use 121 frames at 768x512, "
             "24 fps, 40 steps, cfg 4 (a folder named *distilled*: 8 steps, cfg 1).")
BACKDROP = "#141e46"               # dark blue: a Kinema-Tiny background colour, far from every object colour

WORKFLOWS = {
    "text_to_video_wan": ({
        "1": _loader("fixture-wan-t2v"),
        "2": _text(1, "a paper boat drifts across a calm blue pond, soft morning light", "Positive Prompt"),
        "3": _text(1, NEG, "Negative Prompt"),
        "4": _sampler(length=17, size=64, steps=8, cfg=5.0),
        "5": _video_decode(4),
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": 16.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/text_to_video_wan"}},
    }, ["Text to video with Wan 2.x. Bundled: `fixture-wan-t2v`, a tiny RANDOM-WEIGHT model from "
        "`kinema fixtures` (it makes noise). For real videos put a Wan 2.1/2.2 diffusers folder in "
        "models/diffusers, pick it in Load Video Model and set 81 frames at 832x480, 30 steps, cfg 5, shift 3."]),
    "text_to_video_wan_lora_4step": ({
        "1": _loader("fixture-wan-t2v"),
        "7": {"class_type": "KinemaLoadLoRA", "inputs": {"model": _link(1), "lora": "fixture-wan-lightx2v.safetensors",
                                                         "strength": 1.0}},
        "2": _text(1, "a paper boat drifts across a calm blue pond, soft morning light", "Positive Prompt"),
        "3": _text(1, "", "Negative Prompt (unused at cfg 1)"),
        "4": {"class_type": "KinemaTemporalSampler", "inputs": {
            **_sampler(model=7, length=17, size=64, steps=4, cfg=1.0)["inputs"], "scheduler": "flow_euler",
            "shift": 5.0}},
        "5": _video_decode(4),
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": 16.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/text_to_video_wan_lora_4step"}},
    }, ["Few-step Wan with a distillation LoRA: Load LoRA puts lightx2v's 4-step LoRA on the model, and the sampler "
        "runs 4 steps at cfg 1 (no negative pass: 4 denoiser calls on one prompt instead of 20 on two, about "
        "10x less work than 20 steps at cfg 5) with flow_euler and shift 5, the settings of ComfyUI's Wan 2.2 lightx2v template. Bundled: "
        "`fixture-wan-t2v` and `fixture-wan-lightx2v.safetensors` from `kinema fixtures` (tiny, RANDOM weights in "
        "lightx2v's key layout: noise). For real videos load Wan 2.1/2.2 and put a lightx2v LoRA (e.g. "
        "lightx2v_T2V_14B_cfg_step_distill_v2_lora_rank64_bf16.safetensors for Wan 2.1 14B) in models/loras.",
        "The LoRA never changes the loaded model: connect Load Video Model straight to another sampler and it "
        "samples without the LoRA; change or remove the LoRA and the model is not loaded again."]),
    "text_to_video_wan_files": ({
        "1": {"class_type": "KinemaLoadModelFiles", "inputs": {
            "denoiser": "fixture_wan_t2v.safetensors", "text_encoder": "fixture_umt5.safetensors",
            "vae": "fixture_wan_2.1_vae.safetensors", "device": "auto", "dtype": "auto", "weight_dtype": "auto",
            "text_encoder_memory": "offload", "denoiser_2": "none", "clip_vision": "none"}},
        "2": _text(1, "a paper boat drifts across a calm blue pond, soft morning light", "Positive Prompt"),
        "3": _text(1, NEG, "Negative Prompt"),
        "4": _sampler(length=17, size=64, steps=8, cfg=5.0),
        "5": _video_decode(4),
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": 16.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/text_to_video_wan_files"}},
    }, ["Text to video with Wan from the files ComfyUI users already have: Load Video Model (Files) takes the "
        "denoiser from diffusion_models/, UMT5 from text_encoders/ and the VAE from vae/ (fp16, bf16, fp8, scaled "
        "fp8 or GGUF). Bundled: the `kinema fixtures` files (tiny, RANDOM weights: noise). For real videos pick "
        "wan2.1_t2v_1.3B_fp16, umt5_xxl_fp8_e4m3fn_scaled and wan_2.1_vae (81 frames at 832x480, 30 steps, cfg 5); "
        "for Wan 2.2 A14B put the low-noise expert in denoiser_2."]),
    "image_to_video_wan": ({
        "1": _loader("fixture-wan-i2v"),
        "2": _text(1, "the red ball rolls to the right across the grass", "Positive Prompt"),
        "3": _text(1, NEG, "Negative Prompt"),
        "7": {"class_type": "KinemaLoadImage", "inputs": {"image": "scene.png"}},
        "8": {"class_type": "KinemaImageToVideo", "inputs": {"positive": _link(2), "image": _link(7)}},
        "4": _sampler(pos=8, length=17, size=64, steps=8, cfg=5.0),
        "5": _video_decode(4),
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": 16.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/image_to_video_wan"}},
    }, ["Image to video with Wan 2.x I2V: the loaded image is the first frame. Bundled: `fixture-wan-i2v` "
        "(tiny, RANDOM weights). For real videos use a Wan I2V diffusers folder at 832x480, 81 frames."]),
    "text_to_video": ({
        "1": _loader(TINY),
        "2": _text(1, "a red circle moves right", "Positive Prompt"),
        "3": _text(1, "", "Negative Prompt"),
        "4": _sampler(length=9, size=32, steps=10, cfg=4.0),
        "5": _video_decode(4),
        "7": {"class_type": "KinemaResizeVideo", "inputs": {"images": _link(5), "scale_by": 8.0,
                                                            "method": "bicubic"}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(7), "fps": 8.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/text_to_video"}},
    }, ["Press Run (top right): Kinema-Tiny, the model that ships with the pack, makes this clip in seconds on a "
        "CPU (trained here on simple shapes: 9 frames at 32x32, shown 8x larger). Prompts: 'a {red|green|blue|"
        "yellow|white|purple} {circle|square|triangle|star} {moves left|moves right|moves up|moves down|bounces|"
        "spins|grows|shrinks|stays still}'. "
        "For real videos pick a Wan or AnimateDiff folder in Load Video Model (see text_to_video_wan)."]),
    "animated_sticker": ({
        "1": _loader(TINY),
        "2": _text(1, "a yellow star spins", "Positive Prompt"),
        "3": _text(1, "", "Negative Prompt"),
        "7": {"class_type": "KinemaLoadImage", "inputs": {"image": "sprite.png"}},
        "8": {"class_type": "KinemaCompositeOnColor", "inputs": {"image": _link(7), "mask": _link(7, 1),
                                                                 "color": BACKDROP},
              "_meta": {"title": "Sprite On Backdrop"}},
        "9": {"class_type": "KinemaImageToVideo", "inputs": {"positive": _link(2), "image": _link(8)}},
        "4": _sampler(pos=9, length=9, size=32, steps=10, cfg=4.0, seed=2),
        "5": _video_decode(4),
        "10": {"class_type": "KinemaChromaKey", "inputs": {"images": _link(5), "key_color": BACKDROP,
                                                           "tolerance": 0.1, "softness": 0.1, "despill": 0.0}},
        "11": {"class_type": "KinemaResizeVideo", "inputs": {"images": _link(10), "scale_by": 8.0,
                                                             "method": "bicubic", "mask": _link(10, 1)}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(11), "fps": 8.0, "format": "webp",
                                                          "filename_prefix": "Kinema/sticker", "mask": _link(11, 1)}},
    }, ["Animated sticker with Kinema-Tiny (bundled): the sprite is put on a dark backdrop the model knows, "
        "animated from that first frame (image to video), the backdrop is keyed out again and the looping WebP "
        "keeps the transparency. Try your own 32x32-ish sprite of one bright shape. For real stickers use "
        "animated_sticker_animatediff with an AnimateDiff folder."]),
    "animated_sticker_animatediff": ({
        "1": _loader("fixture-animatediff"),
        "2": _text(1, "a cheerful star sticker waving, flat colours, thick outline", "Positive Prompt"),
        "3": _text(1, NEG, "Negative Prompt"),
        "7": {"class_type": "KinemaLoadImage", "inputs": {"image": "sticker.png"}},
        "8": {"class_type": "KinemaCompositeOnColor", "inputs": {"image": _link(7), "mask": _link(7, 1),
                                                                 "color": "#00ff00"},
              "_meta": {"title": "Sticker On Key Green"}},
        "9": {"class_type": "KinemaVideoEncode", "inputs": {"model": _link(1), "images": _link(8), "length": 8}},
        "4": _sampler(length=8, size=64, steps=8, cfg=7.5, denoise=0.6, latent=9),
        "5": _video_decode(4),
        "10": {"class_type": "KinemaChromaKey", "inputs": {"images": _link(5), "key_color": "#00ff00",
                                                           "tolerance": 0.15, "softness": 0.1, "despill": 1.0}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(10), "fps": 8.0, "format": "webp",
                                                          "filename_prefix": "Kinema/sticker_animatediff", "mask": _link(10, 1)}},
    }, ["Animated sticker (AnimateDiff): the sticker is put on key green, animated with denoise 0.6 so it keeps "
        "its design, then the green is keyed out again: the looping WebP keeps the transparency. Bundled: "
        "`fixture-animatediff` (tiny, RANDOM weights). For real stickers load an AnimateDiff folder "
        "(SD1.5 + motion adapter) and use 512x512, 16 frames, 20 steps."]),
    "long_video": ({
        "1": _loader(TINY),
        "2": {"class_type": "KinemaPromptSchedule", "inputs": {
            "model": _link(1), "schedule": "0: a yellow circle bounces | 20: a yellow circle stays still"}},
        "3": _text(1, "", "Negative Prompt"),
        "7": {"class_type": "KinemaContextOptions", "inputs": {
            "context_length": 9, "context_overlap": 4, "fuse": "pyramid", "noise": "shuffle_context",
            "mode": "auto", "anchor": "first", "anchor_strength": 0.5}},
        "4": {"class_type": "KinemaTemporalSampler", "inputs": {
            **_sampler(length=37, size=32, steps=10, cfg=4.0)["inputs"], "context": _link(7)}},
        "6": _decode_and_save(fps=8.0, prefix="Kinema/long_video"),
    }, ["Long video with Kinema-Tiny (bundled), FreeNoise: 37 frames, over 4x the 9 it was trained on, in 7 "
        "overlapping windows of 9; a prompt schedule switches the motion at frame 20 (bounces, then stays still); "
        "drift anchored to the first window keeps the colours steady. Any longer odd length works the same way.",
        RESUME]),
    "video_with_sound_tiny": ({
        "1": _loader(TINY),
        "2": _text(1, "a red circle bounces", "Positive Prompt"),
        "3": _text(1, "", "Negative Prompt"),
        "7": {"class_type": "KinemaContextOptions", "inputs": {
            "context_length": 9, "context_overlap": 4, "fuse": "pyramid", "noise": "shuffle_context",
            "mode": "auto", "anchor": "first", "anchor_strength": 0.5}},
        "4": {"class_type": "KinemaTemporalSampler", "inputs": {
            **_sampler(length=33, size=32, steps=10, cfg=4.0)["inputs"], "context": _link(7)}},
        "5": _video_decode(4),
        "8": {"class_type": "KinemaLoadAudioModel", "inputs": {"model": "kinema-tiny-audio", "family": "auto",
                                                               "device": "auto", "dtype": "auto",
                                                               "checkpoint": "none", "text_encoder": "none"}},
        "9": {"class_type": "KinemaVideoToAudio", "inputs": {
            "model": _link(8), "images": _link(5), "fps": 8.0, "steps": 20, "cfg": 8.0, "seed": 42,
            "prompt": "", "negative_prompt": ""}},
        "10": {"class_type": "KinemaResizeVideo", "inputs": {"images": _link(5), "scale_by": 8.0,
                                                             "method": "bicubic"}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(10), "fps": 8.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/video_with_sound_tiny",
                                                          "audio": _link(9)}},
    }, ["Video with sound, all bundled: Kinema-Tiny makes 33 frames of a bouncing shape (windows of 9), "
        "Kinema-Tiny Audio watches the frames and puts a knock on each impact (8 kHz mono; onsets land within "
        "2 frames of the visible impacts, see docs/kinema_tiny_audio.md), Save Video muxes both into one "
        "mp4. Same fps in Video to Audio and Save Video: the sound lasts exactly frames / fps. It has no text "
        "input (the prompt is ignored); for real sound use an LTX-2 folder (see video_with_sound)."]),
    "talking_portrait": ({
        "1": {"class_type": "KinemaLoadPortraitModel", "inputs": {"model": "kinema-tiny-portrait", "device": "auto",
                                                                  "dtype": "auto",
                                                                  "checkpoint": "none", "text_encoder": "none"}},
        "2": {"class_type": "KinemaLoadImage", "inputs": {"image": "portrait.png"}},
        "3": {"class_type": "KinemaLoadAudio", "inputs": {"audio": "voice.wav", "sample_rate": 0, "channels": "keep"}},
        "4": {"class_type": "KinemaPortraitAnimate", "inputs": {
            "model": _link(1), "portrait": _link(2), "audio": _link(3), "fps": 25.0, "seed": 42, "steps": 8,
            "cfg": 1.0, "identity_strength": 1.0, "prompt": ""}},
        "5": {"class_type": "KinemaResizeVideo", "inputs": {"images": _link(4), "scale_by": 8.0,
                                                            "method": "bicubic"}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": 25.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/talking_portrait",
                                                          "audio": _link(3)}},
    }, ["Talking portrait, all bundled: `assets/portrait.png` (a drawn face) speaks `assets/voice.wav` (espeak-ng "
        "speech, 4.57 s). Kinema-Tiny Portrait opens the mouth with the loudness of the voice; the clip lasts "
        "ceil(seconds x fps) = 115 frames, in overlapping windows of 9 with the portrait given again in each, "
        "and Save Video muxes the same audio (same fps in both nodes: picture and sound end together). Any "
        "length of audio works the same way. See docs/portrait.md for real portrait models."]),
    "video_edit": ({
        "1": _loader(TINY),
        "7": {"class_type": "KinemaLoadVideo", "inputs": {"video": "red_circle.mp4", "start_frame": 0,
                                                          "frame_count": 9, "width": 32, "height": 32}},
        "2": _text(1, "a blue circle moves right", "Edit Prompt"),
        "3": _text(1, "", "Negative Prompt"),
        "8": _text(1, "a red circle moves right", "Source Prompt"),
        "4": {"class_type": "KinemaVideoEdit", "inputs": {
            "model": _link(1), "images": _link(7), "positive": _link(2), "negative": _link(3), "method": "flowedit",
            "strength": 0.8, "steps": 10, "cfg": 6.0, "source_cfg": 2.0, "seed": 0, "source_prompt": _link(8)}},
        "5": {"class_type": "KinemaResizeVideo", "inputs": {"images": _link(4), "scale_by": 8.0,
                                                            "method": "bicubic"}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": _link(7, 1), "format": "mp4",
                                                          "filename_prefix": "Kinema/video_edit"}},
    }, ["Text-guided video edit with Kinema-Tiny (bundled): `assets/red_circle.mp4` (a red circle moving right) "
        "becomes a blue circle with the same motion and background. FlowEdit moves only what the source and edit "
        "prompts disagree on; method sdedit works for every model (strength 0.5-0.8). Connect a MASK to edit a "
        "region only. Same frame count and fps as the source."]),
    "personalized_video": ({
        "1": _loader(TINY),
        "2": _text(1, "a purple star moves right", "Positive Prompt"),
        "3": _text(1, "", "Negative Prompt"),
        "7": {"class_type": "KinemaLoadImage", "inputs": {"image": "reference_star.png"}},
        "8": {"class_type": "KinemaReferenceImage", "inputs": {"model": _link(1), "positive": _link(2),
                                                               "image": _link(7), "strength": 1.0}},
        "4": _sampler(pos=8, length=9, size=32, steps=10, cfg=4.0, seed=0),
        "5": _video_decode(4),
        "9": {"class_type": "KinemaResizeVideo", "inputs": {"images": _link(5), "scale_by": 8.0,
                                                            "method": "bicubic"}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(9), "fps": 8.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/personalized_video"}},
    }, ["Personalization with Kinema-Tiny (bundled): the reference image `assets/reference_star.png` conditions "
        "the clip (image conditioning), so the star keeps its look while the prompt sets the action. With Wan "
        "image-to-video, the reference is a face or product photo."]),
    "upscale_video": ({
        "1": {"class_type": "KinemaLoadUpscaleModel", "inputs": {"model": "kinema-tiny-upscaler", "device": "auto",
                                                                 "dtype": "auto"}},
        "7": {"class_type": "KinemaLoadVideo", "inputs": {"video": "red_circle.mp4", "start_frame": 0,
                                                          "frame_count": 0, "width": 32, "height": 32}},
        "4": {"class_type": "KinemaVideoUpscale", "inputs": {
            "images": _link(7), "factor": "x2", "strength": 0.0, "steps": 10, "cfg": 5.0, "seed": 0,
            "tile_size": 0, "upscaler": _link(1)}, "_meta": {"title": "Video Upscale (Learned)"}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(4), "fps": _link(7, 1), "format": "mp4",
                                                          "filename_prefix": "Kinema/upscale_video"}},
        "8": {"class_type": "KinemaVideoUpscale", "inputs": {
            "images": _link(7), "factor": "x2", "strength": 0.0, "steps": 10, "cfg": 5.0, "seed": 0,
            "tile_size": 0}, "_meta": {"title": "Video Upscale (Bicubic, To Compare)"}},
        "9": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(8), "fps": _link(7, 1), "format": "mp4",
                                                          "filename_prefix": "Kinema/upscale_video_bicubic"}},
    }, ["Video upscale 2x with the Kinema-Tiny Upscaler (bundled, 0.3 MB): a small network with temporal layers "
        "trained on Kinema-Tiny's clips, 32 -> 64 px, sharper than bicubic and steadier from frame to frame "
        "(measured in models/tiny/MODEL_CARD.md). `assets/red_circle.mp4` is read at 32 px; the second branch "
        "saves plain bicubic beside it to compare. Connect Video Decode of a Kinema-Tiny clip in place of Load "
        "Video to upscale what it makes; x4 runs the upscaler twice. For other videos see "
        "upscale_video_animatediff (resize + refine with a video model)."]),
    "upscale_video_animatediff": ({
        "1": _loader("fixture-animatediff"),
        "7": {"class_type": "KinemaLoadVideo", "inputs": {"video": "red_circle.mp4", "start_frame": 0,
                                                          "frame_count": 0, "width": 32, "height": 32}},
        "2": _text(1, "a red circle moves right on a striped background", "Positive Prompt"),
        "3": _text(1, NEG, "Negative Prompt"),
        "4": {"class_type": "KinemaVideoUpscale", "inputs": {
            "images": _link(7), "factor": "x2", "strength": 0.3, "steps": 10, "cfg": 5.0, "seed": 0,
            "tile_size": 16, "model": _link(1), "positive": _link(2), "negative": _link(3)}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(4), "fps": _link(7, 1), "format": "mp4",
                                                          "filename_prefix": "Kinema/upscale_video"}},
    }, ["Video upscale 2x: resize, then a low-strength refine at the new size through AnimateDiff's temporal "
        "layers, the denoiser on overlapping tiles (memory stays flat). Bundled: `fixture-animatediff` (tiny, "
        "RANDOM weights: the refine adds noise). For real results load an AnimateDiff or Wan folder; for "
        "Kinema-Tiny clips use upscale_video (the learned Kinema-Tiny Upscaler)."]),
    "personalized_video_wan_vace": ({
        "1": _loader("fixture-wan-vace"),
        "2": _text(1, "the star mascot dances on a stage under spotlights", "Positive Prompt"),
        "3": _text(1, NEG, "Negative Prompt"),
        "7": {"class_type": "KinemaLoadImage", "inputs": {"image": "reference_star.png"}},
        "8": {"class_type": "KinemaReferenceImage", "inputs": {"model": _link(1), "positive": _link(2),
                                                               "image": _link(7), "strength": 1.0}},
        "4": _sampler(pos=8, length=17, size=64, steps=8, cfg=5.0),
        "5": _video_decode(4),
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": 16.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/personalized_video_wan_vace"}},
    }, ["Personalization with Wan VACE: the reference image is a VACE reference (fitted into the frame on white, "
        "VAE-encoded and put before the clip in latent time, dropped before decoding), so the subject keeps its "
        "look while the prompt sets the scene and action; strength is VACE's conditioning_scale. Bundled: "
        "`fixture-wan-vace` (tiny, RANDOM weights: noise). For real videos put Wan2.1-VACE-1.3B (diffusers "
        "format, Wan-AI/Wan2.1-VACE-1.3B-diffusers) in models/diffusers and use 81 frames at 832x480, 30 steps, "
        "cfg 5; a face or product photo on a plain background works best."]),
    "long_video_wan": ({
        "1": _loader("fixture-wan-t2v"),
        "2": {"class_type": "KinemaPromptSchedule", "inputs": {
            "model": _link(1), "schedule": "0: a paper boat drifts on a calm pond | 16: the paper boat spins in "
                                           "a whirlpool"}},
        "3": _text(1, NEG, "Negative Prompt"),
        "7": {"class_type": "KinemaContextOptions", "inputs": {
            "context_length": 9, "context_overlap": 4, "fuse": "pyramid", "noise": "shuffle_context",
            "mode": "auto", "anchor": "first", "anchor_strength": 0.5}},
        "4": {"class_type": "KinemaTemporalSampler", "inputs": {
            **_sampler(length=33, size=64, steps=6, cfg=5.0)["inputs"], "context": _link(7)}},
        "6": _decode_and_save(fps=16.0, prefix="Kinema/long_video_wan"),
    }, ["Long video with Wan (FreeNoise): 33 frames in 4 overlapping windows of 9, a prompt schedule with two "
        "prompts, drift anchored to the first window. Bundled: `fixture-wan-t2v` (tiny, RANDOM weights). With a "
        "real Wan model use windows of 81 frames, overlap 16, and as many frames as you like.", RESUME]),
    "text_to_audio": ({
        "1": {"class_type": "KinemaLoadAudioModel", "inputs": {"model": "fixture-stable-audio", "family": "auto",
                                                               "device": "auto", "dtype": "auto",
                                                               "checkpoint": "none", "text_encoder": "none"}},
        "2": {"class_type": "KinemaTextToAudio", "inputs": {
            "model": _link(1), "prompt": "a wooden door creaks open, then slams shut, close mic",
            "negative_prompt": "low quality, noise, music", "seconds": 1.0, "steps": 8, "cfg": 7.0, "seed": 42}},
        "3": {"class_type": "KinemaSaveAudio", "inputs": {"audio": _link(2), "format": "flac",
                                                          "filename_prefix": "Kinema/text_to_audio"}},
    }, ["Text to audio with Stable Audio Open: exactly `seconds` of sound, saved as flac with the workflow inside. "
        "Bundled: `fixture-stable-audio` (tiny, RANDOM weights: it makes noise, at most 1.024 s). For real sound "
        "put stabilityai/stable-audio-open-1.0 (diffusers format) in models/diffusers, pick it in Load Audio "
        "Model and use up to 47 s, 100 steps, cfg 7."]),
    "video_with_sound": ({
        "1": _loader("fixture-wan-t2v"),
        "2": _text(1, "waves crash on rocks at the shore, spray flies up", "Positive Prompt"),
        "3": _text(1, NEG, "Negative Prompt"),
        "4": _sampler(length=17, size=64, steps=8, cfg=5.0),
        "5": _video_decode(4),
        "7": {"class_type": "KinemaLoadAudioModel", "inputs": {"model": "fixture-ltx2", "family": "auto",
                                                               "device": "auto", "dtype": "auto",
                                                               "checkpoint": "none", "text_encoder": "none"}},
        "8": {"class_type": "KinemaVideoToAudio", "inputs": {
            "model": _link(7), "images": _link(5), "fps": 16.0, "steps": 8, "cfg": 4.0, "seed": 42,
            "prompt": "waves crashing, spray, wind", "negative_prompt": "music, speech"}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": 16.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/video_with_sound",
                                                          "audio": _link(8)}},
    }, ["Text to video to sound: Wan makes the clip, LTX-2's audio branch makes the sound while watching the "
        "frames (same fps in Video to Audio and Save Video: the sound lasts exactly frames / fps), Save Video "
        "muxes both into one mp4 (H.264 + AAC). Bundled: `fixture-wan-t2v` and `fixture-ltx2` (tiny, RANDOM "
        "weights: noise). For real results load Wan 2.x and an LTX-2 diffusers folder (Lightricks/LTX-2)."]),
    # ---- LTX-2 (picture and sound in one pass) --------------------------------------------------------------
    "text_to_video_ltx2": ({
        "1": _loader("fixture-ltx2"),
        "2": _text(1, "waves crash on rocks at the shore, spray flies up, the roar of the surf", "Positive Prompt"),
        "3": _text(1, NEG, "Negative Prompt"),
        "4": _sampler(length=17, size=64, steps=4, cfg=3.0),
        "5": _video_decode(4),
        "7": {"class_type": "KinemaDecodeVideoSound", "inputs": {"model": _link(1), "latent": _link(4)}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": 24.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/text_to_video_ltx2",
                                                          "audio": _link(7)}},
    }, [LTX2_NOTE, "Picture and sound in one pass: the Temporal Sampler denoises LTX-2's video and audio latents "
        "together (one transformer, cross-attention both ways); Decode Video Sound gives the sound, exactly frames "
        "/ fps long (24 fps unless the sampler's fps socket is connected: save at the same fps)."]),
    "image_to_video_ltx2": ({
        "1": _loader("fixture-ltx2"),
        "2": _text(1, "the red ball rolls to the right across the grass, birds sing", "Positive Prompt"),
        "3": _text(1, NEG, "Negative Prompt"),
        "7": {"class_type": "KinemaLoadImage", "inputs": {"image": "scene.png"}},
        "8": {"class_type": "KinemaImageToVideo", "inputs": {"positive": _link(2), "image": _link(7)}},
        "4": _sampler(pos=8, length=17, size=64, steps=4, cfg=3.0),
        "5": _video_decode(4),
        "9": {"class_type": "KinemaDecodeVideoSound", "inputs": {"model": _link(1), "latent": _link(4)}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": 24.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/image_to_video_ltx2",
                                                          "audio": _link(9)}},
    }, [LTX2_NOTE, "Image to video: the image is the first frame, held clean while the rest of the clip and its "
        "sound are denoised (LTX2ImageToVideoPipeline's conditioning)."]),
    "long_video_ltx2": ({
        "1": _loader("fixture-ltx2"),
        "2": _text(1, "rain falls on a tin roof, thunder rolls in the distance", "Positive Prompt"),
        "3": _text(1, NEG, "Negative Prompt"),
        "7": {"class_type": "KinemaContextOptions", "inputs": {
            "context_length": 9, "context_overlap": 4, "fuse": "pyramid", "noise": "shuffle_context",
            "mode": "predictions", "anchor": "none", "anchor_strength": 0.0}},
        "4": {"class_type": "KinemaTemporalSampler", "inputs": {
            **_sampler(length=33, size=32, steps=4, cfg=3.0)["inputs"], "context": _link(7)}},
        "5": _video_decode(4),
        "8": {"class_type": "KinemaDecodeVideoSound", "inputs": {"model": _link(1), "latent": _link(4)}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": 24.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/long_video_ltx2",
                                                          "audio": _link(8)}},
    }, [LTX2_NOTE, "Long clips with sound: 33 frames in 5 overlapping windows of 9 (FreeNoise). Each window denoises "
        "its frames and the sound of the same moments in one pass, and overlapping windows are blended on both, "
        "so the sound of the whole clip is one continuous track (no clicks or gaps at the seams). With LTX-2 use "
        "windows of 121 frames, overlap 24."]),
    "upscale_video_ltx2": ({
        "1": _loader("fixture-ltx2"),
        "2": _text(1, "a lighthouse on a cliff at dusk, waves below, gulls calling", "Positive Prompt"),
        "3": _text(1, NEG, "Negative Prompt"),
        "4": _sampler(length=17, size=32, steps=4, cfg=3.0),
        "7": {"class_type": "KinemaLoadUpscaleModel", "inputs": {"model": "fixture-ltx2-upsampler",
                                                                 "device": "auto", "dtype": "auto"}},
        "8": {"class_type": "KinemaLatentUpscale", "inputs": {
            "model": _link(1), "upscaler": _link(7), "latent": _link(4), "positive": _link(2),
            "negative": _link(3), "steps": 8, "cfg": 1.0, "seed": 42, "denoise": 0.375}},
        "5": _video_decode(8),
        "9": {"class_type": "KinemaDecodeVideoSound", "inputs": {"model": _link(1), "latent": _link(8)}},
        "6": {"class_type": "KinemaSaveVideo", "inputs": {"images": _link(5), "fps": 24.0, "format": "mp4",
                                                          "filename_prefix": "Kinema/upscale_video_ltx2",
                                                          "audio": _link(9)}},
    }, [LTX2_NOTE, "LTX-2's two stages: sample small, then Latent Upscale doubles width and height in latent space "
        "with LTX-2's latent upsampler and refines at the new size with the same model (8 steps at denoise 0.375: "
        "a distilled model's stage-2 sigmas). The sound comes along. Bundled: `fixture-ltx2-upsampler` (tiny, "
        "RANDOM weights); real: the LTX-2 release's latent upsampler saved as an LTX2LatentUpsamplePipeline "
        "folder in models/latent_upscale_models or models/diffusers."]),
}


def write_assets() -> None:
    import numpy as np
    from PIL import Image, ImageDraw
    size = 64
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    pts = [(32 + (26 if i % 2 == 0 else 11) * math.sin(i * math.pi / 5),
            33 - (26 if i % 2 == 0 else 11) * math.cos(i * math.pi / 5)) for i in range(10)]
    d.polygon(pts, fill=(255, 200, 40, 255), outline=(60, 30, 10, 255), width=3)
    d.ellipse((24, 26, 28, 30), fill=(60, 30, 10, 255))
    d.ellipse((36, 26, 40, 30), fill=(60, 30, 10, 255))
    img.save(WORKFLOWS_DIR / "assets" / "sticker.png")
    y = np.linspace(0, 1, size)[:, None, None]
    sky = (1 - y) * np.array([120, 180, 255]) + y * np.array([200, 230, 255])
    scene = np.where(np.arange(size)[:, None, None] > 40, np.array([60, 150, 60]), sky).repeat(size, 1)
    yy, xx = np.mgrid[:size, :size]
    scene[(yy - 36) ** 2 + (xx - 18) ** 2 < 64] = (220, 40, 40)
    Image.fromarray(scene.astype(np.uint8)).save(WORKFLOWS_DIR / "assets" / "scene.png")
    write_sprite()


def write_sprite(size: int = 32, ss: int = 8) -> None:
    """sprite.png: a yellow five-pointed star on transparency, Kinema-Tiny's size and style (anti-aliased)."""
    import numpy as np
    from PIL import Image
    yy, xx = (np.mgrid[: size * ss, : size * ss] + 0.5) / (size * ss)
    u, v = (xx - 0.5) / 0.18, (yy - 0.5) / 0.18                       # centre, radius 0.18 of the frame
    theta = np.arctan2(v, u) + math.pi / 2
    sector = 2 * math.pi / 5
    phi = np.remainder(theta, sector)
    phi = np.where(phi > sector / 2, sector - phi, phi)
    r = np.hypot(u, v)
    px, py = r * np.cos(phi), r * np.sin(phi)
    ax, bx, by = 1.3, 0.56 * math.cos(sector / 2), 0.56 * math.sin(sector / 2)   # outer point, inner notch
    inside = (bx - ax) * py - by * (px - ax) >= 0
    alpha = inside.reshape(size, ss, size, ss).mean(axis=(1, 3))
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3] = (245, 230, 36)
    rgba[..., 3] = np.round(alpha * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(WORKFLOWS_DIR / "assets" / "sprite.png")


def render() -> dict[str, str]:
    """name -> JSON text of each UI-format workflow."""
    sys.path.insert(0, str(WORKFLOWS_DIR.parent.parent))
    sys.path.insert(0, str(WORKFLOWS_DIR.parent))        # tools.workflow_layout when run as a script
    from kinema import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    from kinema.host.builder import api_to_ui
    from kinema.host.object_info import object_info
    from tools.workflow_layout import layout
    info = object_info(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    return {name: json.dumps(layout(api_to_ui(prompt, info, notes), info), indent=1) + "\n"
            for name, (prompt, notes) in WORKFLOWS.items()}


if __name__ == "__main__":
    (WORKFLOWS_DIR / "assets").mkdir(exist_ok=True)
    write_assets()
    rendered = render()
    for name, text in rendered.items():
        (WORKFLOWS_DIR / f"{name}.json").write_text(text)
        print(WORKFLOWS_DIR / f"{name}.json")
    from tools.make_thumbnails import write_thumbnails      # workflows/<name>.jpg: the template browser's pictures
    write_thumbnails(sorted(rendered), rerun="--thumbnails" in sys.argv)
