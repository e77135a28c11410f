"""`imagenet-zoo models [PATTERN]`: every model, its input, size, accuracy and cached weights."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from imagenet_zoo.cli.options import add_format_option
from imagenet_zoo.cli.output import emit
from imagenet_zoo.model_types import RegisteredModel
from imagenet_zoo.registry import default_registry
from imagenet_zoo.specs import PREPROCESS_MODES

NAME = "models"
HELP = "every model, its input, size, accuracy and cached weights"


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    parser.add_argument("pattern", nargs="?", help="only models whose name matches, e.g. 'resnet*'")
    add_format_option(parser, "table", "json")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    registry = default_registry()
    emit(model_rows([registry.get(name) for name in registry.names(args.pattern)]), args.format, models_table)
    return 0


def model_rows(models: Iterable[RegisteredModel]) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        spec = model.spec
        rows.append(
            {
                "name": spec.name,
                "aliases": list(spec.aliases),
                "input_size": spec.data_config.input_size,
                "preprocessing": spec.data_config.describe(),
                "params": spec.num_params,
                "weights_bytes": spec.weights.size,
                "top1": spec.accuracy.top1,
                "top5": spec.accuracy.top5,
                "weights_present": model.weights.is_present(spec),
                "license": spec.license,
            }
        )
    return rows


def models_table(rows: list[dict[str, Any]]) -> str:
    header = ("model", "input", "preprocessing", "params", "weights", "top-1", "top-5", "cached")
    body = [
        (
            row["name"],
            f"{row['input_size']}x{row['input_size']}",
            row["preprocessing"],
            f"{row['params'] / 1e6:.1f}M",
            f"{row['weights_bytes'] / 2**20:.0f} MiB",
            f"{row['top1']:.1f}",
            "-" if row["top5"] is None else f"{row['top5']:.1f}",
            "yes" if row["weights_present"] else "no",
        )
        for row in rows
    ]
    widths = [max(len(str(r[i])) for r in (header, *body)) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in (header, *body)
    ]
    legend = "; ".join(f"{mode} = {text}" for mode, text in PREPROCESS_MODES.items())
    return "\n".join([*lines, "", f"preprocessing modes: {legend}", ""])
