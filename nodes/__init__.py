"""Kinema's ComfyUI nodes, one module per node category (importing defines classes only):

loaders.py Kinema/loaders · conditioning.py Kinema/conditioning · sampling.py Kinema/sampling · decode.py
Kinema/decode and Kinema/latent · media.py Kinema/io · audio.py Kinema/audio · portrait.py Kinema/portrait ·
edit.py Kinema/edit. widgets.py holds what several of them share; env.py where they find folders and report
progress; in_comfy.py what they do inside ComfyUI (device, memory, stop)."""
from . import audio, conditioning, decode, edit, in_comfy, loaders, media, portrait, sampling

_MODULES = [loaders, conditioning, sampling, decode, media, audio, portrait, edit]

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _m in _MODULES:
    NODE_CLASS_MAPPINGS.update(_m.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_m.NODE_DISPLAY_NAME_MAPPINGS)
for _cls in NODE_CLASS_MAPPINGS.values():      # inside ComfyUI: its device, memory manager and stop check
    in_comfy.wrap_node(_cls)
