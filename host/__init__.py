"""Kinema's own hosts for the node classes: graph conversion and validation, executor, CLI and server."""
