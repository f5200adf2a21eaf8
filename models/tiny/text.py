"""Kinema-Tiny's text side: a word-level tokenizer over the training vocabulary and a small transformer encoder.

The encoder is trained together with the video model (train.py), so it needs no download. Words outside the
vocabulary are dropped with a Python warning that names them (never an error); a few common synonyms map to the
trained words ("moving" -> "moves", "rotating" -> "spins", "violet" -> "purple").
"""
from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn

# the world Kinema-Tiny was trained on (training/tiny/data.py draws it): its shapes, and its colours with the RGB
# they are drawn in
SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {                       # name -> RGB 0..1 (bright, far apart in RGB; a checker picks the nearest)
    "red": (0.92, 0.16, 0.14),
    "green": (0.16, 0.86, 0.22),
    "blue": (0.18, 0.38, 1.00),
    "yellow": (0.96, 0.90, 0.14),
    "white": (0.96, 0.96, 0.96),
    "purple": (0.68, 0.22, 0.94),
}
SPECIALS = ("<pad>", "<bos>")
WORDS = ("a", "an", "the", *COLOURS, *SHAPES, "moves", "left", "right", "up", "down", "bounces", "spins", "grows",
         "shrinks", "stays", "still")
ALIASES = {
    "move": "moves", "moving": "moves", "goes": "moves", "going": "moves", "slides": "moves", "sliding": "moves",
    "bounce": "bounces", "bouncing": "bounces", "hops": "bounces", "hopping": "bounces", "jumps": "bounces",
    "spin": "spins", "spinning": "spins", "rotates": "spins", "rotating": "spins", "turns": "spins",
    "grow": "grows", "growing": "grows", "expands": "grows", "expanding": "grows",
    "shrink": "shrinks", "shrinking": "shrinks", "contracts": "shrinks",
    "stay": "stays", "staying": "stays", "static": "still", "stationary": "still", "motionless": "still",
    "violet": "purple", "circles": "circle", "squares": "square", "triangles": "triangle", "stars": "star",
    "upwards": "up", "upward": "up", "downwards": "down", "downward": "down", "leftwards": "left",
    "rightwards": "right", "to": None, "is": None, "and": None,
}
_NUMBER = {w: i for i, w in enumerate(SPECIALS + WORDS)}


def vocabulary() -> tuple[str, ...]:
    return SPECIALS + WORDS


def _short(text: str, limit: int = 100) -> str:
    """A prompt as a message quotes it: at most `limit` characters, and its length when cut."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def tokenize(text: str, max_length: int, warn: bool = True) -> list[int]:
    """Prompt -> token ids: <bos>, the known words in order, <pad> up to max_length (extra words are cut).

    Unknown words are dropped with a UserWarning naming them; filler words ("to", "is") are dropped silently.
    """
    ids = [_NUMBER["<bos>"]]
    unknown = []
    for word in re.findall(r"[a-z]+", text.lower()):
        word = ALIASES.get(word, word)
        if word is None:
            continue
        if word in _NUMBER and word not in SPECIALS:
            ids.append(_NUMBER[word])
        else:
            unknown.append(word)
    if unknown and warn:
        words = list(dict.fromkeys(unknown))            # each once, in order; a long prompt is not echoed whole
        listed = ", ".join(repr(w[:30]) for w in words[:10]) + (f" and {len(words) - 10} more" if len(words) > 10
                                                                 else "")
        warnings.warn(f"Kinema-Tiny does not know the word(s) {listed} in prompt {_short(text)}; they are ignored. "
                      f"It knows: {', '.join(WORDS)}.", UserWarning, stacklevel=3)
    if len(ids) > max_length:
        warnings.warn(f"Kinema-Tiny prompt {_short(text)} is longer than {max_length - 1} words; the rest is cut.",
                      UserWarning, stacklevel=3)
        ids = ids[:max_length]
    return ids + [_NUMBER["<pad>"]] * (max_length - len(ids))


@dataclass
class TextEncoderConfig:
    vocab_size: int = len(SPECIALS) + len(WORDS)
    max_length: int = 12        # <bos> + up to 11 words
    dim: int = 128              # width of the token states handed to the video model
    depth: int = 2              # transformer layers
    heads: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


class TinyTextEncoder(nn.Module):
    """Token ids (B, L) -> token states (B, L, dim). Position 0 (<bos>) doubles as the pooled prompt vector."""

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.pos = nn.Parameter(torch.zeros(1, config.max_length, config.dim))
        layer = nn.TransformerEncoderLayer(config.dim, config.heads, config.dim * 2, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)
        nn.init.normal_(self.embed.weight, std=0.3)
        nn.init.normal_(self.pos, std=0.1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]     # (B, L, D)
        return self.norm(self.layers(x))                                       # (B, L, D)

    def encode(self, texts: list[str], device=None, warn: bool = True) -> torch.Tensor:
        ids = torch.tensor([tokenize(t, self.config.max_length, warn) for t in texts], device=device)
        return self(ids)
