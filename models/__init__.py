"""All real work of Kinema: plain torch + diffusers, no ComfyUI, no runner, no server."""
