"""Research code that is not part of the installed pack: run from the repository root (`python -m training.tiny.train`)."""
