"""Media nodes: load an image or a video, save / preview a video, chroma key, flat-colour compositing and resizing.

What the editor shows is decided by the `ui` dict an output node returns. Checked against ComfyUI core and the
frontend (1.58): core SaveVideo / SaveAnimatedWEBP return {"images": [{filename, subfolder, type}],
"animated": [True]} (comfy_api/latest/_ui.py PreviewVideo, SavedImages). The frontend (src/utils/litegraphUtil.ts
isAnimatedOutput / isVideoOutput) then shows:
  - animated and the file is not .webp/.png  -> a <video> element (mp4, webm: plays, loops, with sound);
  - animated .webp (or .png)                 -> an animated <img>;
  - not animated                             -> a plain image preview (an <img>, which animates a gif by itself).
So mp4/webm/webp report animated [True]; gif reports animated [False], because with True the frontend would hand
the gif to a <video> element, which cannot play it. VideoHelperSuite's "gifs" key is drawn only by its own JS
widget, so it is not used here.
"""
from __future__ import annotations

from ..models import media
from ..models.video_io import VIDEO_EXTENSIONS
from . import env, widgets

_COLOR_TIP = "Hex colour #rrggbb (or #rgb): #00ff00 green, #0000ff blue, #ff00ff magenta."
_image_path = widgets.input_resolver("image")
_video_path = widgets.input_resolver("video")


def _alpha(images, mask):
    """ComfyUI MASK (1 = transparent) -> opacity (1 = opaque), checked against the images first."""
    if mask is None:
        return None
    return 1.0 - media.check_mask("mask", mask, *images.shape[:3]).float()


class KinemaLoadImage:
    DESCRIPTION = ("Loads an image from the input folder (upload one with the button). Transparent PNG/WebP "
                   "stickers give their alpha as a MASK, 1 where transparent, as ComfyUI's Load Image does.")
    CATEGORY = "Kinema/io"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The image (1, H, W, 3) float 0..1, EXIF rotation applied; first frame of an animation.",
                       "1 - alpha (1 = transparent), (1, H, W); all zeros when the file has no alpha.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = widgets.input_files(media.IMAGE_EXTENSIONS)
        return {"required": {"image": (files, {"image_upload": True, "tooltip":
                                               "An image file in the input folder (png, jpg, webp, gif, bmp, tiff). "
                                               "A missing file is an error before the run starts."})}}

    @classmethod
    def IS_CHANGED(cls, image):
        return env.file_signature(_image_path, image)

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        return env.file_problem(_image_path, image)

    def load(self, image):
        return media.load_image(_image_path(image))


class KinemaLoadVideo:
    DESCRIPTION = ("Loads a video from the input folder (mp4, webm, mov, mkv, animated gif or webp): a frame range, "
                   "optionally resized, streamed so frames outside the range are never kept. Gives frames and fps.")
    CATEGORY = "Kinema/io"
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("images", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("Frames (F, H, W, 3) float 0..1 (alpha is dropped).",
                       "The file's frames per second: connect to Save Video to keep the timing.",
                       "How many frames were loaded (F).")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        files = widgets.input_files(VIDEO_EXTENSIONS)
        return {"required": {
            "start_frame": ("INT", {"default": 0, "min": 0, "max": 1000000, "tooltip":
                                    "First frame to load (0 = the first). Past the end is an error."}),
            "frame_count": ("INT", {"default": 0, "min": 0, "max": 1000000, "tooltip":
                                    "Frames to load from start_frame; 0 loads to the end. More than the file has is "
                                    "an error (never padded). Wan needs 4k+1 (17, 81), Kinema-Tiny 9."}),
            "width": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8, "tooltip":
                              "Resize to this width in pixels; 0 keeps it (or follows the aspect ratio when height "
                              "is set, rounded to 8). The frame is centre-cropped to the new aspect, never "
                              "stretched."}),
            "height": ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8, "tooltip":
                               "Resize to this height in pixels; 0 keeps it (or follows the aspect ratio when width "
                               "is set, rounded to 8)."}),
            "video": (files, {"video_upload": True, "tooltip":
                              "A video in the input folder (mp4, webm, mov, mkv, gif, webp). A missing file is an "
                              "error before the run starts."}),
        }}

    @classmethod
    def IS_CHANGED(cls, video, **_):
        return env.file_signature(_video_path, video)

    @classmethod
    def VALIDATE_INPUTS(cls, video):
        return env.file_problem(_video_path, video)

    def load(self, video, start_frame, frame_count, width, height):
        from ..models.video_io import read_video
        frames, fps = read_video(_video_path(video), start_frame, frame_count, height, width)
        return frames, float(fps), int(frames.shape[0])


class KinemaSaveVideo:
    DESCRIPTION = ("Saves frames as a video in the output folder: mp4 (H.264, plays everywhere), webm (VP9, with "
                   "alpha), webp (animated sticker with alpha) or gif. Audio is muxed into mp4/webm.")
    CATEGORY = "Kinema/io"
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames (F, H, W, 3 or 4) 0..1; a 4th channel is alpha. Odd "
                                                "sizes are padded by one edge pixel for mp4 only."}),
                "fps": widgets.video_fps(),
                "format": ([f.value for f in media.VideoFormat], {"default": "mp4", "tooltip":
                           "mp4: H.264 + AAC, no transparency (a transparent mask is an error). webm: VP9 + Opus, "
                           "with alpha. webp: looping, 8-bit alpha, no audio. gif: looping, 256 colours, 1-bit "
                           "alpha, no audio."}),
                "filename_prefix": widgets.filename_prefix("Kinema/video"),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Transparency, 1 = transparent (ComfyUI's convention): (F, H, W) or "
                                             "one (1, H, W) for all frames. Stored by webm, webp and gif."}),
                "audio": ("AUDIO", {"tooltip": "Sound for mp4/webm, trimmed or padded with silence to exactly "
                                               "frames / fps seconds; both streams start at 0."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, images, fps, format, filename_prefix, mask=None, audio=None, prompt=None, extra_pnginfo=None):
        fmt = media.video_format(format)
        root = env.output_dir()
        path = media.next_output_path(root, filename_prefix, fmt.value)
        media.save_video(images, path, fps, fmt, alpha=_alpha(images, mask), audio=audio,
                         metadata=widgets.save_tags(prompt, extra_pnginfo))
        return {"ui": widgets.video_ui(widgets.saved_entry(path, root, "output"), fmt), "result": ()}


class KinemaPreviewVideo:
    DESCRIPTION = "Shows frames as a looping animated WebP (with transparency) on the node; saved in the temp folder."
    CATEGORY = "Kinema/io"
    RETURN_TYPES = ()
    RETURN_NAMES = ()
    OUTPUT_TOOLTIPS = ()
    OUTPUT_NODE = True
    FUNCTION = "preview"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"images": ("IMAGE", {"tooltip": "Frames (F, H, W, 3 or 4) 0..1; a 4th channel is alpha."}),
                         "fps": widgets.video_fps()},
            "optional": {"mask": ("MASK", {"tooltip": "Transparency, 1 = transparent: (F, H, W) or one (1, H, W) "
                                                      "for all frames."})},
        }

    def preview(self, images, fps, mask=None):
        root = env.temp_dir()
        path = media.next_output_path(root, widgets.preview_prefix(), "webp")
        media.save_video(images, path, fps, media.VideoFormat.WEBP, alpha=_alpha(images, mask),
                         quality=80, webp_method=2)
        entry = widgets.saved_entry(path, root, "temp")
        return {"ui": widgets.video_ui(entry, media.VideoFormat.WEBP), "result": ()}


class KinemaChromaKey:
    DESCRIPTION = ("Keys out a backdrop colour (green screen) by its hue, whatever its brightness, and removes the "
                   "colour spill: frames + a MASK (1 = keyed out) ready for Save Video as webm/webp/gif.")
    CATEGORY = "Kinema/io"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("images", "mask")
    OUTPUT_TOOLTIPS = ("The frames with the key colour's spill removed, (F, H, W, 3).",
                       "Transparency, 1 where the backdrop was keyed out (ComfyUI's MASK convention), (F, H, W).")
    FUNCTION = "key"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames (F, H, W, 3 or 4) 0..1 shot on a flat backdrop. An alpha "
                                            "channel stays transparent."}),
            "key_color": ("STRING", {"default": "#00ff00", "tooltip": "The backdrop colour. " + _COLOR_TIP}),
            "tolerance": ("FLOAT", {"default": 0.15, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                          "Chroma distance (0..~0.75) still counted as backdrop: screen noise is ~0.02-0.08, "
                          "skin ~0.6 from green. 0 keys only the exact colour."}),
            "softness": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                         "Width of the soft edge above tolerance (same units); 0 gives a hard cut."}),
            "despill": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip":
                        "0..1: limits the key's strongest channel (green on a green screen) to the other two, "
                        "removing fringes; 0 keeps colours untouched."}),
        }}

    def key(self, images, key_color, tolerance, softness, despill):
        rgb = media.parse_hex_color("key_color", key_color)
        return media.chroma_key(images, rgb, tolerance, softness, despill)


class KinemaCompositeOnColor:
    DESCRIPTION = ("Puts an image with transparency on a flat colour, e.g. a sticker on green before a model or an "
                   "mp4 that has no alpha.")
    CATEGORY = "Kinema/io"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("image",)
    OUTPUT_TOOLTIPS = ("(F, H, W, 3): the image where opaque, the colour where transparent, blended in between.",)
    FUNCTION = "composite"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "Image or frames (F, H, W, 3 or 4) 0..1; a 4th channel is ignored "
                                           "(connect the mask)."}),
            "mask": ("MASK", {"tooltip": "Transparency, 1 = transparent (as Load Image gives it); one (1, H, W) mask "
                                         "applies to all frames. Must match the image size."}),
            "color": ("STRING", {"default": "#00ff00", "tooltip": "Fill colour. " + _COLOR_TIP}),
        }}

    def composite(self, image, mask, color):
        return (media.composite_on_color(image, mask, media.parse_hex_color("color", color)),)


class KinemaResizeVideo:
    DESCRIPTION = ("Scales frames (and their mask) up or down, e.g. Kinema-Tiny's 32 px clips to a size you can see. "
                   "Sizes round to even numbers so any format can save them. For detail-adding upscaling use a "
                   "model; this only resamples.")
    CATEGORY = "Kinema/io"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("images", "mask")
    OUTPUT_TOOLTIPS = ("The scaled frames (F, H', W', C).",
                       "The mask scaled the same way; all opaque (zeros) when no mask was connected.")
    FUNCTION = "resize"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "Frames (F, H, W, 3 or 4) 0..1."}),
            "scale_by": ("FLOAT", {"default": 8.0, "min": 0.01, "max": 16.0, "step": 0.01, "tooltip":
                         "Size factor: 8 turns 32x32 into 256x256, 0.5 halves. The result is rounded to even "
                         "width and height."}),
            "method": ([m.value for m in media.ResizeMethod], {"default": "bicubic", "tooltip":
                       "nearest: hard pixels; bilinear/bicubic: smooth (antialiased when shrinking); "
                       "area: averaging, the best for shrinking."}),
        }, "optional": {
            "mask": ("MASK", {"tooltip": "Optional transparency (1 = transparent) scaled along with the frames."}),
        }}

    def resize(self, images, scale_by, method, mask=None):
        out, m = media.resize_frames(images, scale_by, method, mask)
        if m is None:
            m = out.new_zeros((1, *out.shape[1:3]))
        return out, m


NODE_CLASS_MAPPINGS = {
    "KinemaLoadImage": KinemaLoadImage,
    "KinemaLoadVideo": KinemaLoadVideo,
    "KinemaSaveVideo": KinemaSaveVideo,
    "KinemaPreviewVideo": KinemaPreviewVideo,
    "KinemaChromaKey": KinemaChromaKey,
    "KinemaCompositeOnColor": KinemaCompositeOnColor,
    "KinemaResizeVideo": KinemaResizeVideo,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "KinemaLoadImage": "Load Image (Kinema)",
    "KinemaLoadVideo": "Load Video (Kinema)",
    "KinemaSaveVideo": "Save Video (Kinema)",
    "KinemaPreviewVideo": "Preview Video (Kinema)",
    "KinemaChromaKey": "Chroma Key",
    "KinemaCompositeOnColor": "Composite On Color",
    "KinemaResizeVideo": "Resize Video",
}
