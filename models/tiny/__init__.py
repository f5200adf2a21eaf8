"""Kinema-Tiny: a small text/image-to-video model trained here from procedural clips (see MODEL_CARD.md)."""
