"""Kinema's ComfyUI nodes, one module per capability group. Importing defines classes only."""
from . import audio, conditioning, decode, edit, loaders, media, portrait, sampling

_MODULES = [loaders, conditioning, sampling, decode, media, audio, portrait, edit]

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
for _m in _MODULES:
    NODE_CLASS_MAPPINGS.update(_m.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_m.NODE_DISPLAY_NAME_MAPPINGS)
