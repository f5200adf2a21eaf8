"""Kinema: ComfyUI custom nodes for generative video and audio.

ComfyUI imports this file as `custom_nodes/<folder>/__init__.py`; pip installs the same folder as `kinema`.
Nothing here touches torch devices, the disk or ComfyUI: the node modules only define classes.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
