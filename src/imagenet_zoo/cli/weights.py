"""`imagenet-zoo weights fetch|verify|path|import NAME [FILE]`: a model's weights file, by hand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from imagenet_zoo.api import resolve_model
from imagenet_zoo.cli.options import model_name
from imagenet_zoo.errors import UsageError

NAME = "weights"
HELP = "fetch, verify, locate or import weights files"


def register(sub: Any) -> None:
    parser = sub.add_parser(NAME, help=HELP)
    parser.add_argument(
        "action", choices=("fetch", "verify", "path", "import"), help="what to do with the model's weights"
    )
    parser.add_argument("model", type=model_name, metavar="NAME", help="a zoo model")
    parser.add_argument("file", nargs="?", metavar="FILE", help="with import: the file obtained elsewhere")
    parser.add_argument("--notop", action="store_true", help="the feature-extractor file (include_top=False)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = resolve_model(args.model)
    include_top = not args.notop
    if args.action != "import" and args.file:
        raise UsageError(f"weights {args.action} takes no FILE")
    if args.action == "fetch":
        path = model.weights.fetch(model.spec, include_top=include_top)
    elif args.action == "verify":
        path = model.weights.verify(model.spec, include_top=include_top)
        print(f"ok: {path}", file=sys.stderr)
    elif args.action == "import":
        if not args.file:
            raise UsageError("weights import needs the FILE to import")
        path = model.weights.import_file(model.spec, Path(args.file), include_top=include_top)
    else:
        path = model.weights.path(model.spec, include_top=include_top)
        if not model.weights.is_present(model.spec, include_top=include_top):
            print(path)
            print(
                f"imagenet-zoo: not present yet; `imagenet-zoo weights fetch {model.spec.name}`",
                file=sys.stderr,
            )
            return 1
    print(path)
    return 0
