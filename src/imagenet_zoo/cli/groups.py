"""`imagenet-zoo groups WORD`: the WordNet groups of ImageNet classes a word names (`classify --groups`)."""

from __future__ import annotations

import argparse
from typing import Any

from imagenet_zoo.cli.options import add_format_option
from imagenet_zoo.cli.output import emit, printable
from imagenet_zoo.errors import UsageError

NAME = "groups"
HELP = "WordNet groups of ImageNet classes (for classify --groups)"


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    parser.add_argument("word", metavar="WORD", help="part of a group's name, or a synset id")
    add_format_option(parser, "table", "json")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from imagenet_zoo.data.hierarchy import wordnet

    hierarchy = wordnet()
    rows = [
        {
            "synset": s.id,
            "name": s.name,
            "lemmas": list(s.lemmas),
            "depth": hierarchy.depths[s.id],
            "classes": len(hierarchy.classes_under(s.id)),
        }
        for s in hierarchy.matching(args.word)
    ]
    if not rows:
        raise UsageError(f"no WordNet group above the ImageNet classes is named like {args.word!r}")
    emit(rows, args.format, groups_table)
    return 0


def groups_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'synset':<10} {'depth':>5} {'classes':>7}  lemmas"]
    lines += [
        f"{r['synset']:<10} {r['depth']:>5} {r['classes']:>7}  {printable(', '.join(r['lemmas']))}"
        for r in rows
    ]
    return "\n".join(lines) + "\n"
