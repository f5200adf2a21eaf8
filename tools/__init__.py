"""Developer tools run from the repository root (not installed): `python tools/make_workflows.py`."""
