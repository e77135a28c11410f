"""`imagenet-zoo compare PHOTO... --models M,...`: several models on the same photos, side by side, with
their latency and where they agree."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from imagenet_zoo.api import resolve_model
from imagenet_zoo.cli import options
from imagenet_zoo.cli.output import printable
from imagenet_zoo.jobs.compare import ModelStatus, PhotoComparison, compare_models
from imagenet_zoo.registry import list_models

NAME = "compare"
HELP = "several models on the same photos, side by side"


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    parser.add_argument("photos", nargs="+", metavar="PHOTO", help="image files, folders or glob patterns")
    parser.add_argument(
        "--models",
        type=_model_list,
        action=options.Accumulate,
        default=["all"],
        metavar="M[,M...]",
        help="all (default), or models separated by commas or given by repeating the flag",
    )
    parser.add_argument("--top", type=options.top_k, default=3, help="labels per model and photo (default 3)")
    options.add_format_option(parser, "table", "json")
    options.add_load_options(parser, *options.ENGINE_OPTIONS)
    parser.set_defaults(run=run)


def _model_list(value: str) -> list[str]:
    """`--models a,b`: each one checked as `--model` is, or `all`."""
    names = [name for name in value.split(",") if name]
    return ["all"] if names == ["all"] else [options.model_name(name) for name in names]


def run(args: argparse.Namespace) -> int:
    names = list_models() if args.models == ["all"] else args.models
    options.check_top(args, names)
    models = [resolve_model(name) for name in names]
    statuses, comparisons = compare_models(args.photos, models, options.load_config(args), top=args.top)
    if args.format == "json":
        report = {
            "models": [{"model": s.name, "ready": s.ready, "fetch": s.fetch_command} for s in statuses],
            "photos": [c.to_dict() for c in comparisons],
        }
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(comparison_table(statuses, comparisons))
    failed = any(not a.result.ok for c in comparisons for a in c.answers)
    return 1 if failed or not any(s.ready for s in statuses) else 0


def comparison_table(statuses: list[ModelStatus], comparisons: list[PhotoComparison]) -> str:
    lines: list[str] = []
    for comparison in comparisons:
        lines.append(printable(comparison.path))
        for answer in comparison.answers:
            result = answer.result
            model = printable(result.model)
            if result.error is not None:
                lines.append(f"  {model:<20} ERROR {result.error.type}: {printable(result.error.message)}")
                continue
            ranked = "  ".join(f"{printable(p.label)} {p.score:.1%}" for p in result.predictions)
            lines.append(f"  {model:<20} {answer.latency_ms:8.1f} ms  {ranked}")
        for status in statuses:
            if not status.ready:
                lines.append(f"  {status.name:<20} weights missing: {status.fetch_command}")
        agreement = comparison.agreement()
        if agreement["label"] is not None:
            verdict = "all agree" if agreement["all_agree"] else "majority"
            lines.append(
                f"  {verdict}: {printable(agreement['label'])} ({printable(', '.join(agreement['models']))})"
            )
        lines.append("")
    return "\n".join(lines)
