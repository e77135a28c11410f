"""`imagenet-zoo eval DIR_OR_CSV`: top-1/top-5 accuracy of models on labelled photos (synset names, synset
folders or a CSV), and optionally a WordNet group scored as yes/no."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from imagenet_zoo.cli import options
from imagenet_zoo.cli.output import emit
from imagenet_zoo.jobs.evaluate import Evaluation, MissingWeights, evaluate_models
from imagenet_zoo.registry import DEFAULT_MODEL

NAME = "eval"
HELP = "top-1/top-5 accuracy on labelled photos (synset names or CSV)"


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    parser.add_argument(
        "source", metavar="DIR_OR_CSV", help="labelled photos: a folder, or a CSV of path,label"
    )
    options.add_models_option(parser, f"models to evaluate (default {DEFAULT_MODEL})")
    options.add_format_option(parser, "table", "json")
    parser.add_argument("--output", metavar="FILE", help="per-photo results (.jsonl or .csv)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the --output file if it holds results"
    )
    parser.add_argument(
        "--group", type=options.word, metavar="WORD", help="also score a WordNet group as yes/no, e.g. dog"
    )
    options.add_load_options(parser, "batch_size", "workers", *options.ENGINE_OPTIONS, batch_size=16)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    load = options.load_config(args, model=args.model[0])
    results = evaluate_models(
        Path(args.source),
        args.model,
        load,
        output=Path(args.output) if args.output else None,
        overwrite=args.overwrite,
        group=args.group,
        warn=lambda message: print(f"imagenet-zoo: {message}", file=sys.stderr),
    )
    rows = [
        {"model": r.model, "error": r.message} if isinstance(r, MissingWeights) else evaluation_dict(r)
        for r in results
    ]
    emit(rows, args.format, accuracy_table)
    return 1 if any("error" in row for row in rows) else 0


def evaluation_dict(accuracy: Evaluation) -> dict[str, Any]:
    row = {
        "model": accuracy.model,
        "engine": accuracy.engine,
        "precision": accuracy.precision,
        "n": accuracy.n,
        "top1": round(accuracy.top1, 4),
        "top5": round(accuracy.top5, 4),
        "failed": accuracy.failed,
        "seconds": round(accuracy.seconds, 2),
        "images_per_second": round(accuracy.images_per_second, 1),
    }
    group = accuracy.group
    if group is not None:
        row["group"] = {
            "name": group.name,
            "synset": group.synset,
            "precision": round(group.precision, 4),
            "recall": round(group.recall, 4),
            "balanced_accuracy": round(group.balanced_accuracy, 4),
            "true_positives": group.true_positives,
            "false_positives": group.false_positives,
            "true_negatives": group.true_negatives,
            "false_negatives": group.false_negatives,
        }
    return row


def accuracy_table(rows: list[dict[str, Any]]) -> str:
    header = ("model", "engine", "prec", "n", "top-1", "top-5", "failed", "img/s")
    lines = ["{:<20} {:<9} {:<5} {:>6} {:>7} {:>7} {:>6} {:>7}".format(*header)]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['model']:<20} {row['error']}")
        else:
            lines.append(
                f"{row['model']:<20} {row['engine']:<9} {row['precision']:<5} {row['n']:>6} "
                f"{row['top1']:>7.1%} {row['top5']:>7.1%} {row['failed']:>6} {row['images_per_second']:>7.1f}"
            )
            if "group" in row:
                g = row["group"]
                lines.append(
                    f"  group {g['name']} ({g['synset']}, score >= 50%): precision {g['precision']:.1%}, "
                    f"recall {g['recall']:.1%}, balanced accuracy {g['balanced_accuracy']:.1%} "
                    f"({g['true_positives']} of {g['true_positives'] + g['false_negatives']} found, "
                    f"{g['false_positives']} false alarms)"
                )
    return "\n".join(lines) + "\n"
