"""Kinema-Tiny's procedural data, pixel checkers, training and evaluation scripts (video, audio, portrait). The models
they train, and what inference needs (the text vocabulary, the portrait's loudness features), live in
kinema/models/tiny/."""
