"""Audio nodes: load / save / preview sound, text to audio, audio for a video (Load Audio Model is in loaders.py).

What the editor shows (frontend 1.58.1, src/extensions/core/uploadAudio.ts): an output {"audio": [{filename,
subfolder, type}]} is played by an `audioUI` widget (an <audio> element). The frontend adds that widget only to
core classes (LoadAudio, SaveAudio, PreviewAudio, ...); any other node gets it by declaring an input
"audioUI": ("AUDIO_UI", {}). It must be optional (the widget is never serialised, so a required one would fail
ComfyUI's validation) and keep that exact name (the upload button and onNodeOutputsUpdated look it up by name);
input_order places it before the upload button that `audio_upload` adds, which needs it to exist.
"""
from __future__ import annotations

from ..models import audio as audio_io   # `audio` is the ComfyUI input name
from . import env, widgets
from .sampling import cache_result, step_cache_input

_AUDIO_UI = ("AUDIO_UI", {"tooltip": "The editor's audio player (drawn by the frontend; nothing to connect)."})
_audio_path = widgets.input_resolver("audio")


class KinemaLoadAudio:
    DESCRIPTION = ("Loads a sound file from the input folder (upload one with the button): wav, flac, ogg, mp3, "
                   "m4a, or the sound track of a video. Optionally resampled and mixed to mono or stereo.")
    CATEGORY = "Kinema/audio"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("AUDIO {'waveform': (1, channels, samples) float -1..1, 'sample_rate'}: the whole file.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = widgets.input_files(audio_io.AUDIO_EXTENSIONS)
        return {"required": {
            "audio": (files, {"audio_upload": True, "tooltip": "A sound file in the input folder (wav, flac, ogg, "
                              "mp3, m4a, mp4/webm sound tracks). A missing file is an error before the run."}),
            "sample_rate": ("INT", {"default": 0, "min": 0, "max": audio_io.MAX_RATE, "step": 1, "tooltip":
                            "Hz to resample to (band-limited sinc); 0 keeps the file's rate. Stable Audio uses "
                            "44100, LTX-2 16000 in / 16000 or 48000 out."}),
            "channels": ([m.value for m in audio_io.ChannelMode], {"default": "keep", "tooltip":
                         "keep: as in the file. mono: the mean of all channels. stereo: mono is duplicated; "
                         "more than two channels keep the first two (front left, front right)."}),
        }, "optional": {"audioUI": _AUDIO_UI}}

    @classmethod
    def IS_CHANGED(cls, audio, **kwargs):
        return env.file_signature(_audio_path, audio)

    @classmethod
    def VALIDATE_INPUTS(cls, audio):
        return env.file_problem(_audio_path, audio)

    def load(self, audio, sample_rate, channels, audioUI=None):
        return (audio_io.load_audio(_audio_path(audio), sample_rate, channels),)


class KinemaSaveAudio:
    DESCRIPTION = ("Saves sound in the output folder as wav (16-bit, plays everywhere) or flac (16-bit lossless, "
                   "with the workflow stored inside like ComfyUI's Save Audio). One file per clip of the batch.")
    CATEGORY = "Kinema/audio"
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "audio": ("AUDIO", {"tooltip": "Sound (batch, channels, samples), -1..1; louder samples are clipped."}),
                "format": ([f.value for f in audio_io.AudioFormat], {"default": "flac", "tooltip":
                           "flac: lossless, about half the size of wav, keeps the workflow (drag it onto the "
                           "editor). wav: 16-bit PCM, no workflow."}),
                "filename_prefix": widgets.filename_prefix("Kinema/audio"),
            },
            "optional": {"audioUI": _AUDIO_UI},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, audio, format, filename_prefix, audioUI=None, prompt=None, extra_pnginfo=None):
        from ..models.media import next_output_path
        waveform, rate = audio_io.check_audio("audio", audio)
        tags = widgets.save_tags(prompt, extra_pnginfo)
        root, entries = env.output_dir(), []
        for clip in waveform:                                                   # (C, T) each
            path = next_output_path(root, filename_prefix, format)
            entries.append(widgets.saved_entry(audio_io.save_audio(clip, rate, path, format, tags), root, "output"))
        return {"ui": {"audio": entries}, "result": ()}


class KinemaPreviewAudio:
    DESCRIPTION = "Plays sound on the node (a flac in the temp folder); nothing is kept in the output folder."
    CATEGORY = "Kinema/audio"
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "preview"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": ("AUDIO", {"tooltip": "Sound (batch, channels, samples); the first clip "
                                                            "plays, every clip is written."})},
                "optional": {"audioUI": _AUDIO_UI}}

    def preview(self, audio, audioUI=None):
        from ..models.media import next_output_path
        waveform, rate = audio_io.check_audio("audio", audio)
        root, prefix, entries = env.temp_dir(), widgets.preview_prefix(), []
        for clip in waveform:                                                   # (C, T) each
            path = next_output_path(root, prefix, "flac")
            entries.append(widgets.saved_entry(audio_io.save_audio(clip, rate, path, "flac"), root, "temp"))
        return {"ui": {"audio": entries}, "result": ()}


_STEPS = ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip":
                  "Denoising steps. More is slower and usually cleaner (Stable Audio ~100, LTX-2 ~30, Kinema-Tiny "
                  "Audio 20)."})
_CFG = ("FLOAT", {"default": 7.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip":
                  "Classifier-free guidance. 1.0 or less turns it off (one model call a step, negative ignored); "
                  "Stable Audio ~7, LTX-2 ~4, Kinema-Tiny Audio 8 (weaker leaves some knocks too soft)."})


class KinemaTextToAudio:
    DESCRIPTION = ("Makes sound effects or music from a prompt with Kinema's denoising loop (Stable Audio Open): "
                   "exactly `seconds` long, the same result as diffusers' StableAudioPipeline for a seed.")
    CATEGORY = "Kinema/audio"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("AUDIO (1, channels, round(seconds x rate)) at the model's rate (44.1 kHz stereo for Stable "
                       "Audio Open).",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_AUDIO_MODEL", {"tooltip": "A text-to-audio model from Load Audio Model."}),
            "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                       "What to hear, e.g. 'a hammer hitting wood, close mic'. Long prompts are truncated at the "
                       "encoder's token limit (128 for Stable Audio Open)."}),
            "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                                "What to avoid, e.g. 'low quality, noise'. Empty uses the model's own "
                                "unconditional input; ignored when cfg <= 1."}),
            "seconds": ("FLOAT", {"default": 10.0, "min": 0.01, "max": 600.0, "step": 0.01, "tooltip":
                        "Length in seconds, kept exactly (rounded to the nearest sample). At most the model's "
                        "window (47.55 s for Stable Audio Open): longer is an error."}),
            "steps": ("INT", {**_STEPS[1], "default": 100}),
            "cfg": _CFG,
            "seed": widgets.seed(),
        }, "optional": {
            "step_cache": step_cache_input("generation"),
        }}

    def generate(self, model, prompt, negative_prompt, seconds, steps, cfg, seed, step_cache=None):
        from ..models.step_cache import Stats
        stats = Stats()
        sound = audio_io.text_to_audio(model, prompt, negative_prompt, seconds, steps, cfg, seed,
                                       on_step=widgets.step_progress(steps), step_cache=step_cache, cache_stats=stats)
        return cache_result((sound,), step_cache, stats)


class KinemaVideoToAudio:
    DESCRIPTION = ("Makes the sound for a video: LTX-2's audio branch listens to the frames (and an optional "
                   "prompt) while it denoises, so sounds land when things happen. The audio lasts exactly "
                   "frames / fps and starts with the first frame: connect it to Save Video with the same fps.")
    CATEGORY = "Kinema/audio"
    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    OUTPUT_TOOLTIPS = ("AUDIO (1, channels, round(frames x rate / fps)) at the model's rate.",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("KINEMA_AUDIO_MODEL", {"tooltip": "A video-to-audio model (LTX-2, Kinema-Tiny Audio) from "
                                                       "Load Audio Model."}),
            "images": ("IMAGE", {"tooltip": "The video frames (F, H, W, C) 0..1. Resized (aspect kept) to what the "
                                            "model encodes; any frame count (padded inside to the VAE's grid)."}),
            "fps": widgets.fps("Frames per second of the video: the audio lasts frames / fps seconds. Use the "
                               "same value in Save Video, or sound and picture drift apart."),
            "steps": ("INT", {**_STEPS[1], "default": 30}),
            "cfg": ("FLOAT", {**_CFG[1], "default": 4.0}),
            "seed": widgets.seed(),
        }, "optional": {
            "prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                       "Optional words about the sound ('rain on a tin roof'); empty lets the picture decide."}),
            "negative_prompt": ("STRING", {"multiline": True, "default": "", "tooltip":
                                "Optional: what to avoid ('music, speech'); ignored when cfg <= 1."}),
            "step_cache": step_cache_input("generation"),
        }}

    def generate(self, model, images, fps, steps, cfg, seed, prompt="", negative_prompt="", step_cache=None):
        from ..models.step_cache import Stats
        stats = Stats()
        sound = audio_io.video_to_audio(model, images, fps, prompt, negative_prompt, steps, cfg, seed,
                                        on_step=widgets.step_progress(steps), step_cache=step_cache,
                                        cache_stats=stats)
        return cache_result((sound,), step_cache, stats)


NODE_CLASS_MAPPINGS = {
    "KinemaLoadAudio": KinemaLoadAudio,
    "KinemaSaveAudio": KinemaSaveAudio,
    "KinemaPreviewAudio": KinemaPreviewAudio,
    "KinemaTextToAudio": KinemaTextToAudio,
    "KinemaVideoToAudio": KinemaVideoToAudio,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "KinemaLoadAudio": "Load Audio (Kinema)",
    "KinemaSaveAudio": "Save Audio (Kinema)",
    "KinemaPreviewAudio": "Preview Audio (Kinema)",
    "KinemaTextToAudio": "Text to Audio",
    "KinemaVideoToAudio": "Video to Audio",
}
