"""The ImageNet-1k class index, shipped with the package so decoding labels never needs a network."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files


@dataclass(frozen=True)
class ClassLabel:
    index: int
    synset: str
    name: str


@cache
def imagenet1k() -> tuple[ClassLabel, ...]:
    """The 1,000 classes in the standard order (sorted WordNet ids; n01440764 'tench' is 0)."""
    text = files(__package__).joinpath("imagenet1k.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return tuple(ClassLabel(int(index), synset, name) for index, synset, name, _lemmas in rows)
